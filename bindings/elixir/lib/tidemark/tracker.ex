defmodule Tidemark.Tracker do
  @moduledoc """
  An exact flush-offset tracker (docs/CONTRACT.md §3) with kill-proof liveness (§4).

  A collector commits each transaction with the writers it was delivered to; writers report what
  they flushed; `ack/1` is the position the source may be acknowledged up to. Writers are
  registered with their pid: the NIF monitors the process itself (`enif_monitor_process`), so a
  writer killed with `Process.exit(pid, :kill)`, by a brutal-kill supervisor shutdown, or for any
  other reason is reported to the tracker with the class chosen at registration — no Elixir code
  has to run. `sweep/1` evicts writers that stopped making progress.

  ## Messages

  With `subscriber: pid`, that process receives (in this order for one call: events, then ack)

    * `{:tidemark_ack, tracker, ack}` — the ack advanced (values only grow; several advances
      between two calls are coalesced into one message);
    * `{:tidemark_evicted, tracker, writer, reason}` — `reason` is `:crashed`, `:orphaned` or
      `:stalled`; the writer no longer pins the ack and its later reports are refused with
      `{:error, :evicted_writer}` until it is unregistered;
    * `{:tidemark_challenge, tracker, writer}` — no flush progress for the grace period: answer
      with `touch/2` (or a flush) before the next sweep, or it is evicted;
    * `{:tidemark_removed, tracker, writer}` — a `:cleanup` down (`remove/2` sends nothing).

  Without a subscriber, poll `ack/1` and `take_events/1` (`t:legacy_event/0` terms:
  `{:challenge, w}`, `{:evicted, w, reason}`, `{:removed, w}`), or let a `Tidemark.Sweeper`
  sweep every interval and forward the events.

  ### Unified events (opt-in)

  With `events: :unified` in `new/1`, every event is one message shape,
  `{:tidemark_event, tracker, event}`, and `event` (`t:event/0`) is exactly the term
  `take_events/1` returns:

    * `{:evicted, writer, reason}` — as `:tidemark_evicted` above;
    * `{:challenged, writer}` — as `:tidemark_challenge` above;
    * `{:removed, writer}` — as `:tidemark_removed` above.

  The default, `events: :legacy`, keeps the messages and `take_events/1` terms listed first
  (those of the first release), unchanged. The ack message is the same either way.

  ## Lifetime

  The tracker is owned by the process that created it (option `:owner`), like an ETS table:
  when the owner exits, or on `close/1`, every writer monitor is dropped and later calls return
  `{:error, :closed}`. The native tracker is freed when the last reference to it is garbage
  collected. A writer's registration (and its slot) lasts until `unregister/2`: unregister
  writers once their eviction is handled.

  ## Bounded work per call

  The library examines at most a *call budget* of deliveries per call (1 024 by default, see
  `set_call_budget/2`): releasing a writer that pinned the ack for a long time can leave many
  finished deliveries to pop, and the rest waits as a *backlog*. Every function here that can
  run the tracker's log (`commit/3`, `flushed/3`, `flushed_many/2`, `remove/2`, `down/3`,
  `unregister/2`, `touch/2`, `pause/2`, `resume/2`, `take_events/1`, `sweep/1`) checks for a
  backlog before returning; when one is left, the call continues on a dirty CPU scheduler
  until it is done and only then returns, so the normal scheduler runs one library call's work
  for it (one budget; two for `remove/2`, `down/3` and `unregister/2` when they release the
  head, which end its stint and then help the backlog that left; under two for
  `flushed_many/2`, which hands the rest of its list to the dirty scheduler once its reports
  caused a budget's worth) and the ack is exact when the call returns. A
  writer's process exiting is reported from the monitor's callback, which hands a backlog to a
  short-lived native thread instead. `work_stats/1` counts the work, `run_backlog/1` runs one
  step by hand.

  All functions take the tracker's monotonic clock (`tidemark_monotonic_ms`) as `now`.
  Malformed arguments raise `ArgumentError`.

  ## Names

  Options, statuses, writer states, event kinds, evict reasons and down classes use the names of
  the C ABI, snake_case (`:stall_grace_ms`, `{:error, :evicted_writer}`, `:pending`,
  `:challenged`, `:stalled`, `:teardown`; the table is in docs/ABI.md, "Vocabulary"). Names of
  the first release stay accepted or available as aliases: the option `:grace_ms`
  (= `:stall_grace_ms`), and the legacy event shapes with `:challenge` (the default
  `events: :legacy`; `events: :unified` uses `:challenged` everywhere).
  """

  alias Tidemark.Native

  @type t :: reference()
  @type writer :: non_neg_integer()
  @type down_class :: :crash | :cleanup | :teardown
  @type evict_reason :: :crashed | :orphaned | :stalled

  @typedoc """
  An event of a tracker created with `events: :unified`: the same term in its
  `{:tidemark_event, tracker, event}` messages and in `take_events/1`.
  """
  @type event ::
          {:challenged, writer()} | {:evicted, writer(), evict_reason()} | {:removed, writer()}

  @typedoc "An event as `take_events/1` returns it by default (`events: :legacy`)."
  @type legacy_event ::
          {:challenge, writer()} | {:evicted, writer(), evict_reason()} | {:removed, writer()}

  @typedoc """
  A writer's state: `:idle` (owes nothing), `:pending` (owes a delivered commit), `:orphaned`
  (its monitored process died and it was reported down with class `:teardown`: it still pins
  what it owes, and the first sweep past the grace period evicts it if it owes anything), or
  `{:evicted, reason}`.
  """
  @type writer_status :: :idle | :pending | :orphaned | {:evicted, evict_reason()}

  @new_opts [
    :stall_grace_ms,
    :grace_ms,
    :initial_ack,
    :subscriber,
    :owner,
    :max_writers,
    :expected_writers,
    :event_capacity,
    :events
  ]

  @doc """
  Creates a tracker.

  Options:

    * `:stall_grace_ms` — progress timeout before a pending writer is challenged (default
      60 000; `tidemark_tracker_options.stall_grace_ms`). `:grace_ms`, its first name, is
      still accepted as an alias; give one of the two;
    * `:initial_ack` — the ack before the first commit (e.g. the slot's confirmed position),
      a floor the ack never goes below;
    * `:subscriber` — a pid that receives ack and event messages (default: none, poll instead);
    * `:owner` — the process whose exit closes the tracker (default `self()`);
    * `:events` — the shape of event messages and `take_events/1` terms: `:legacy` (default;
      `{:tidemark_evicted, t, w, reason}`, `{:tidemark_challenge, t, w}`,
      `{:tidemark_removed, t, w}` and `{:challenge, w}`) or `:unified`
      (`{:tidemark_event, t, event}`, `t:event/0`); see "Messages";
    * `:max_writers`, `:expected_writers`, `:event_capacity` — see `tidemark_tracker_options`.
      `register_writer/3` runs on a normal scheduler whenever the library has a writer slot
      ready (the `:expected_writers` slots allocated up front, slots freed by `unregister/2`,
      and the rest of a table segment the library already grew), and moves to a dirty CPU
      scheduler only for a registration that makes the library allocate (counted as
      `:dirty_registrations` in `work_stats/1`).
  """
  @spec new(keyword()) :: {:ok, t()} | {:error, Tidemark.reason()}
  def new(opts \\ []) do
    opts = validate!(opts, @new_opts)

    shape =
      case Keyword.get(opts, :events, :legacy) do
        shape when shape in [:legacy, :unified] ->
          shape

        other ->
          raise ArgumentError, "expected events: :legacy or :unified, got: #{inspect(other)}"
      end

    Native.tracker_new(
      stall_grace_ms(opts),
      opts[:initial_ack],
      opts[:subscriber],
      Keyword.get(opts, :owner, self()),
      opts[:max_writers],
      opts[:expected_writers],
      opts[:event_capacity],
      shape
    )
  end

  @doc """
  Registers a writer for the process `pid` and monitors it. When the process exits the writer is
  reported down with the class given as `down:`:

    * `:teardown` (default) — keeps pinning the ack (a rolling deploy must not mass-evict) but
      is marked orphaned; the first sweep past the grace period evicts it (`:orphaned`);
    * `:crash` — evicted at once (`:crashed`), the ack moves without a sweep;
    * `:cleanup` — unpins at once, reported as removed.

  A pid that is already dead is reported at once. Returns the writer id. Runs on a dirty CPU
  scheduler only when the library has to allocate writer slots for it (see `new/1`).
  """
  @spec register_writer(t(), pid(), keyword()) :: {:ok, writer()} | {:error, Tidemark.reason()}
  def register_writer(tracker, pid, opts \\ []) when is_pid(pid) do
    opts = validate!(opts, [:down])
    Native.tracker_register(tracker, pid, Keyword.get(opts, :down, :teardown))
  end

  @doc "Releases a writer's slot and drops its monitor; its id becomes stale (`:unknown_writer`)."
  @spec unregister(t(), writer()) :: :ok | {:error, Tidemark.reason()}
  def unregister(tracker, writer), do: Native.tracker_unregister(tracker, writer)

  @doc """
  Hands a commit (its last offset) to the tracker with the writers it was delivered to.
  `offset`'s `tx` must exceed the previous commit's (`{:error, :offset_regressed}`); a refused
  commit changes nothing. Commit from one process.
  """
  @spec commit(t(), Tidemark.offset(), [writer()]) :: :ok | {:error, Tidemark.reason()}
  def commit(tracker, offset, writers) when is_list(writers),
    do: Native.tracker_commit(tracker, offset, writers)

  @doc "Reports that `writer` flushed everything up to `offset`."
  @spec flushed(t(), writer(), Tidemark.offset()) :: :ok | {:error, Tidemark.reason()}
  def flushed(tracker, writer, offset), do: Native.tracker_flushed(tracker, writer, offset)

  @doc """
  Many flush reports in one call, applied in order. Returns `{:ok, failures}` with
  `{writer, reason}` for each report that was refused (empty when all were applied).
  """
  @spec flushed_many(t(), [{writer(), Tidemark.offset()}]) ::
          {:ok, [{writer(), Tidemark.reason()}]} | {:error, Tidemark.reason()}
  def flushed_many(tracker, reports) when is_list(reports),
    do: Native.tracker_flushed_many(tracker, reports)

  @doc "Removes a writer on purpose: what it owes stops pinning the ack. The id stays registered."
  @spec remove(t(), writer()) :: :ok | {:error, Tidemark.reason()}
  def remove(tracker, writer), do: Native.tracker_remove(tracker, writer)

  @doc "Reports a writer down by hand (the monitor does this by itself for registered pids)."
  @spec down(t(), writer(), down_class()) :: :ok | {:error, Tidemark.reason()}
  def down(tracker, writer, class), do: Native.tracker_down(tracker, writer, class)

  @doc "Answers a challenge: the writer is alive and deferring on purpose; its grace restarts."
  @spec touch(t(), writer()) :: :ok | {:error, Tidemark.reason()}
  def touch(tracker, writer), do: Native.tracker_touch(tracker, writer)

  @doc "Pauses a writer (backpressure): sweeps neither challenge nor evict it. It still pins."
  @spec pause(t(), writer()) :: :ok | {:error, Tidemark.reason()}
  def pause(tracker, writer), do: Native.tracker_pause(tracker, writer)

  @doc "Resumes a paused writer; its grace period restarts now."
  @spec resume(t(), writer()) :: :ok | {:error, Tidemark.reason()}
  def resume(tracker, writer), do: Native.tracker_resume(tracker, writer)

  @doc """
  Runs a staleness sweep now (on a dirty scheduler: its cost grows with the writers it acts on).
  Returns the counts; events go to the subscriber or `take_events/1`.
  """
  @spec sweep(t()) ::
          {:ok, %{challenged: non_neg_integer(), evicted: non_neg_integer()}}
          | {:error, Tidemark.reason()}
  def sweep(tracker), do: Native.tracker_sweep(tracker)

  @doc "The ack (one atomic load); `{:error, :empty}` before the first ack."
  @spec ack(t()) :: {:ok, non_neg_integer()} | {:error, Tidemark.reason()}
  def ack(tracker), do: Native.tracker_ack(tracker)

  @doc "The writer holding the ack back, what it owes and how long it made no progress."
  @spec pinning(t()) ::
          {:ok,
           %{
             writer: writer(),
             owes: Tidemark.offset(),
             flushed: Tidemark.offset() | nil,
             ms_since_progress: non_neg_integer(),
             paused: boolean(),
             challenged: boolean(),
             orphaned: boolean()
           }}
          | {:error, Tidemark.reason()}
  def pinning(tracker), do: Native.tracker_pinning(tracker)

  @doc "Counters and gauges (a snapshot, for metrics)."
  @spec stats(t()) :: {:ok, map()} | {:error, Tidemark.reason()}
  def stats(tracker), do: Native.tracker_stats(tracker)

  @doc """
  A writer's state (`t:writer_status/0`): `:idle`, `:pending`, `:orphaned` once its monitored
  process died with down class `:teardown` (or after `down(t, w, :teardown)`), until a sweep
  evicts it or it is unregistered; `{:evicted, reason}`.
  """
  @spec writer_status(t(), writer()) :: {:ok, writer_status()} | {:error, Tidemark.reason()}
  def writer_status(tracker, writer), do: Native.tracker_writer_status(tracker, writer)

  @doc """
  Takes up to 256 queued events, oldest first: `{:challenge, w}`, `{:evicted, w, reason}`,
  `{:removed, w}` (`t:legacy_event/0`, the default), or with `events: :unified` the
  `t:event/0` terms `{:challenged, w}`, `{:evicted, w, reason}`, `{:removed, w}`. (With a
  subscriber, events are sent as messages instead and this returns what is left, normally
  nothing.)
  """
  @spec take_events(t()) :: {:ok, [legacy_event()] | [event()]} | {:error, Tidemark.reason()}
  def take_events(tracker), do: Native.tracker_take_events(tracker)

  @doc """
  Work counters: the evidence that every call does bounded work.

    * `:budget` — the most deliveries one library call may examine (`set_call_budget/2`);
    * `:deliveries_popped`, `:entries_scanned` — deliveries popped at the head of the log and
      deliveries examined by compaction, in all;
    * `:max_call_work` — the most deliveries any single library call examined (never above
      `:budget`);
    * `:backlogs` — library calls that stopped at the budget and left a backlog;
    * `:backlog` — whether leftover work is waiting now; `:log_len` — deliveries in the log;
    * `:dirty_continuations` — calls of this binding that continued a backlog (or the rest of
      a `flushed_many/2` list) on a dirty CPU scheduler;
    * `:dirty_work` — deliveries popped or scanned during those continuations and by the
      background thread (the rest of the work ran on the schedulers the calls were made on);
    * `:background_runs` — backlogs left by a monitor's down callback and run by the binding's
      background thread;
    * `:dirty_registrations` — `register_writer/3` calls that the library could not serve
      without allocating writer slots, and that therefore registered on a dirty CPU scheduler.
  """
  @spec work_stats(t()) :: {:ok, map()} | {:error, Tidemark.reason()}
  def work_stats(tracker), do: Native.tracker_work_stats(tracker)

  @doc """
  Sets the most deliveries one library call may examine (pop, judge or compact); default 1 024.
  A smaller budget makes every normal-scheduler call shorter and a backlog take more steps.
  `{:error, :invalid_argument}` for 0.
  """
  @spec set_call_budget(t(), pos_integer()) :: :ok | {:error, Tidemark.reason()}
  def set_call_budget(tracker, deliveries) when is_integer(deliveries) and deliveries >= 0,
    do: Native.tracker_set_call_budget(tracker, deliveries)

  @doc """
  Runs one budgeted step of leftover work on the calling scheduler; `{:ok, true}` while more
  remains. Not needed in normal use (calls finish their backlog before returning); for a
  process that wants to finish a backlog in small steps of its own.
  """
  @spec run_backlog(t()) :: {:ok, boolean()} | {:error, Tidemark.reason()}
  def run_backlog(tracker), do: Native.tracker_run_backlog(tracker)

  @doc "Whether leftover work (a drain backlog or a compaction pass) is waiting."
  @spec has_backlog(t()) :: {:ok, boolean()} | {:error, Tidemark.reason()}
  def has_backlog(tracker), do: Native.tracker_has_backlog(tracker)

  @doc "Drops every writer monitor; later calls return `{:error, :closed}`."
  @spec close(t()) :: :ok
  def close(tracker), do: Native.tracker_close(tracker)

  # `:stall_grace_ms`, or its alias `:grace_ms` (nil: the library default).
  defp stall_grace_ms(opts) do
    case {Keyword.fetch(opts, :stall_grace_ms), Keyword.fetch(opts, :grace_ms)} do
      {:error, :error} -> nil
      {{:ok, ms}, :error} -> ms
      {:error, {:ok, ms}} -> ms
      _ -> raise ArgumentError, "give :stall_grace_ms or its alias :grace_ms, not both"
    end
  end

  defp validate!(opts, allowed) when is_list(opts) do
    case Keyword.keys(opts) -- allowed do
      [] -> opts
      unknown -> raise ArgumentError, "unknown options #{inspect(unknown)}"
    end
  end

  defp validate!(opts, _allowed),
    do: raise(ArgumentError, "expected a keyword list, got: #{inspect(opts)}")
end
