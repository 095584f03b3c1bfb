defmodule Tidemark.Sweeper do
  @moduledoc """
  A supervised process that runs `Tidemark.Tracker.sweep/1` every interval and forwards the
  events it finds, as the Go binding's `WatchEvents` does.

      children = [
        {Tidemark.Sweeper, tracker: t, interval_ms: 1_000, subscriber: self()}
      ]

  Options:

    * `:tracker` (required) — the tracker to sweep;
    * `:interval_ms` — time between the end of one sweep and the start of the next
      (default 1 000);
    * `:subscriber` (required) — where events go: a pid, which receives
      `{:tidemark_event, tracker, event}` with `event` a `t:Tidemark.Tracker.event/0`
      (`{:challenged, w}`, `{:evicted, w, reason}`, `{:removed, w}`), or a one-argument
      function, called in the sweeper process with that same message. (No default: under a
      supervisor the caller of `start_link/1` is the supervisor, which is never the process
      meant to get the events.)

  The sweeper always forwards this unified shape, whatever the tracker's `:events` option:
  with the default `events: :legacy` it translates `take_events/1`'s `{:challenge, w}` into
  `{:challenged, w}` (the other two terms are the same in both shapes), so a sweeper's
  subscriber handles one shape only.
    * `:name` — registers the process; `:id` — the child id (default `Tidemark.Sweeper`).

  Each tick runs the sweep (on a dirty CPU scheduler, as `sweep/1` always does), then takes the
  queued events with `Tidemark.Tracker.take_events/1` until none is left and forwards them,
  oldest first: events of the sweep and any other queued since the last tick (monitor-reported
  crashes, removals). A tracker created with its own `:subscriber` sends its events there
  instead, and the sweeper then forwards nothing (it still sweeps).

  When the tracker is closed, the sweeper stops with reason `:normal`; its child spec is
  `restart: :transient`, so a supervisor does not restart it for that. A function that raises
  crashes the sweeper (the events of that tick already taken are lost) and it is restarted.
  """

  use GenServer

  alias Tidemark.Tracker

  @typedoc "Where events are forwarded."
  @type subscriber :: pid() | (term() -> any())

  @type option ::
          {:tracker, Tracker.t()}
          | {:interval_ms, pos_integer()}
          | {:subscriber, subscriber()}
          | {:name, GenServer.name()}
          | {:id, term()}

  @typedoc "Counters of a sweeper: ticks run and events forwarded, since it started."
  @type stats :: %{
          sweeps: non_neg_integer(),
          challenged: non_neg_integer(),
          evicted: non_neg_integer(),
          events: non_neg_integer()
        }

  @allowed [:tracker, :interval_ms, :subscriber, :name, :id]

  @doc "A child spec: `restart: :transient`, id from `:id` (default `Tidemark.Sweeper`)."
  @spec child_spec([option()]) :: Supervisor.child_spec()
  def child_spec(opts) when is_list(opts) do
    %{
      id: Keyword.get(opts, :id, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      restart: :transient,
      type: :worker
    }
  end

  @doc "Starts a sweeper linked to the caller (see the module doc for the options)."
  @spec start_link([option()]) :: GenServer.on_start()
  def start_link(opts) when is_list(opts) do
    opts = validate!(opts)
    {gen_opts, opts} = Keyword.split(opts, [:name])
    GenServer.start_link(__MODULE__, opts, gen_opts)
  end

  @doc """
  Runs one tick now (sweep, then forward the events) and returns the sweep's counts with the
  number of events forwarded; the interval restarts from now.
  """
  @spec sweep_now(GenServer.server()) ::
          {:ok,
           %{challenged: non_neg_integer(), evicted: non_neg_integer(), events: non_neg_integer()}}
          | {:error, Tidemark.reason()}
  def sweep_now(server), do: GenServer.call(server, :sweep_now)

  @doc "Ticks run and events forwarded since the sweeper started."
  @spec stats(GenServer.server()) :: stats()
  def stats(server), do: GenServer.call(server, :stats)

  @doc "Stops the sweeper."
  @spec stop(GenServer.server()) :: :ok
  def stop(server), do: GenServer.stop(server)

  # ----- GenServer ------------------------------------------------------------------------

  @impl true
  def init(opts) do
    state = %{
      tracker: Keyword.fetch!(opts, :tracker),
      interval: Keyword.get(opts, :interval_ms, 1_000),
      subscriber: Keyword.fetch!(opts, :subscriber),
      timer: nil,
      stats: %{sweeps: 0, challenged: 0, evicted: 0, events: 0}
    }

    {:ok, schedule(state)}
  end

  @impl true
  def handle_info({:tick, ref}, %{timer: {ref, _}} = state) do
    case tick(%{state | timer: nil}) do
      {:ok, _counts, state} -> {:noreply, schedule(state)}
      {:error, :closed, state} -> {:stop, :normal, state}
      {:error, reason, state} -> {:stop, {:sweep_failed, reason}, state}
    end
  end

  # A tick whose timer was cancelled (sweep_now/1 ran meanwhile), or a stray message.
  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def handle_call(:sweep_now, _from, state) do
    state = cancel(state)

    case tick(state) do
      {:ok, counts, state} -> {:reply, {:ok, counts}, schedule(state)}
      {:error, :closed, state} -> {:stop, :normal, {:error, :closed}, state}
      {:error, reason, state} -> {:reply, {:error, reason}, schedule(state)}
    end
  end

  def handle_call(:stats, _from, state), do: {:reply, state.stats, state}

  # ----- internals ------------------------------------------------------------------------

  defp tick(state) do
    case Tracker.sweep(state.tracker) do
      {:ok, %{challenged: c, evicted: e}} ->
        case forward_events(state, 0) do
          {:ok, n} ->
            stats = %{
              state.stats
              | sweeps: state.stats.sweeps + 1,
                challenged: state.stats.challenged + c,
                evicted: state.stats.evicted + e,
                events: state.stats.events + n
            }

            {:ok, %{challenged: c, evicted: e, events: n}, %{state | stats: stats}}

          {:error, reason} ->
            {:error, reason, state}
        end

      {:error, reason} ->
        {:error, reason, state}
    end
  end

  # take_events/1 returns at most 256 per call: take until a short page.
  defp forward_events(state, n) do
    case Tracker.take_events(state.tracker) do
      {:ok, events} ->
        Enum.each(events, &deliver(state, {:tidemark_event, state.tracker, unified(&1)}))
        count = length(events)
        if count >= 256, do: forward_events(state, n + count), else: {:ok, n + count}

      {:error, reason} ->
        {:error, reason}
    end
  end

  # take_events/1's terms under `events: :legacy` differ from the unified ones for challenges only.
  defp unified({:challenge, w}), do: {:challenged, w}
  defp unified(event), do: event

  defp deliver(%{subscriber: pid}, msg) when is_pid(pid), do: send(pid, msg)
  defp deliver(%{subscriber: fun}, msg) when is_function(fun, 1), do: fun.(msg)

  # Each timer carries its own ref: a tick of a cancelled timer that is already in the mailbox
  # does not match the current one and is ignored, so one chain of ticks runs at a time.
  defp schedule(state) do
    ref = make_ref()
    %{state | timer: {ref, Process.send_after(self(), {:tick, ref}, state.interval)}}
  end

  defp cancel(%{timer: nil} = state), do: state

  defp cancel(%{timer: {_ref, tref}} = state) do
    Process.cancel_timer(tref)
    %{state | timer: nil}
  end

  defp validate!(opts) do
    case Keyword.keys(opts) -- @allowed do
      [] -> :ok
      unknown -> raise ArgumentError, "unknown options #{inspect(unknown)}"
    end

    unless is_reference(opts[:tracker]),
      do:
        raise(
          ArgumentError,
          "expected tracker: a Tidemark.Tracker, got #{inspect(opts[:tracker])}"
        )

    case Keyword.get(opts, :interval_ms, 1_000) do
      ms when is_integer(ms) and ms > 0 -> :ok
      ms -> raise ArgumentError, "expected interval_ms: a positive integer, got #{inspect(ms)}"
    end

    case Keyword.get(opts, :subscriber) do
      pid when is_pid(pid) ->
        :ok

      fun when is_function(fun, 1) ->
        :ok

      other ->
        raise ArgumentError, "expected subscriber: a pid or a 1-arity fun, got #{inspect(other)}"
    end

    Keyword.delete(opts, :id)
  end
end
