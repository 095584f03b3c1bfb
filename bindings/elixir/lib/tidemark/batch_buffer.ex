defmodule Tidemark.BatchBuffer do
  @moduledoc """
  A batch buffer (docs/CONTRACT.md §5): many producers push messages, one sink takes batches by
  count, bytes or linger (age of the batch's first message), and `stop/2` closes admission, drains,
  and hands back — in order — everything the sink did not acknowledge by the deadline.

  Messages are binaries, or `{binary, offset}` with `offset = {tx, op}` (or `nil`). A batch's
  `messages` and a stop report's `handed_back_messages` are `{binary, offset | nil}`
  (`t:out_message/0`), which `push/2` and `push_many/2` take as they are: requeueing needs no
  reshaping. (A stop report's `handed_back` also carries the outcome flag,
  `{payload, offset | nil, outcome_unknown?}`; see `stop/2`.)

  Every call is non-blocking on a normal scheduler except `flush/2` with a timeout and `stop/2`,
  which wait on a dirty IO scheduler (the sink keeps running in other processes meanwhile);
  `stop_async/2` stops without blocking anyone. Malformed arguments raise `ArgumentError`.

  ## A notified sink

  A sink process needs no sleep-and-poll: `subscribe/2` registers it, `poll_batch_notify/1`
  takes a batch or, when none is due, arms a one-shot notification, and the process receives
  `{:tidemark_batch_ready, buffer}` when a batch becomes due (a size trigger, the first message
  after idle, an ack or a stop that changes what it may take) or when its linger expires
  (`poll_batch_notify/1` sets a timer from the library's wait hint). So the sink is a plain
  `receive` loop (a GenServer does the same in `handle_info/2`):

      def run(buffer) do
        :ok = Tidemark.BatchBuffer.subscribe(buffer)   # also sends a first :tidemark_batch_ready
        loop(buffer)
      end

      defp loop(buffer) do
        receive do
          {:tidemark_batch_ready, ^buffer} -> drain(buffer)
        end
      end

      defp drain(buffer) do
        case Tidemark.BatchBuffer.poll_batch_notify(buffer) do
          {:ok, batch} ->
            :ok = store(batch.messages)
            :ok = Tidemark.BatchBuffer.ack(buffer, batch)
            drain(buffer)

          {:would_block, _wait} ->
            loop(buffer)       # armed: a message comes when a batch is due or its linger ends

          {:error, :closed} ->
            :done              # stopped: nothing more will come
        end
      end

  A notification may be spurious (the poll then finds nothing and re-arms); none is lost between
  the poll and the arming. Drain until `:would_block` on every message: one message may stand
  for several batches. `stop_async/2` stops without blocking the caller, so the sink itself can
  stop the buffer and keep acking while it drains.
  """

  alias Tidemark.Native

  @type t :: reference()
  @type message :: binary() | {binary(), Tidemark.offset() | nil}
  @typedoc "A message as the buffer hands it out (in a batch or a stop report)."
  @type out_message :: {binary(), Tidemark.offset() | nil}

  @type stop_report :: %{
          accepted: non_neg_integer(),
          delivered: non_neg_integer(),
          failed: non_neg_integer(),
          handed_back_count: non_neg_integer(),
          handed_back: [{binary(), Tidemark.offset() | nil, boolean()}],
          handed_back_messages: [out_message()],
          outcome_unknown: [boolean()],
          in_flight_unknown: non_neg_integer(),
          unknown_batches: non_neg_integer(),
          timed_out: boolean()
        }

  defmodule Batch do
    @moduledoc """
    A batch taken by the sink. Give it back with `Tidemark.BatchBuffer.ack/2` or `nack/3`
    (once). A batch dropped without either stays in flight and is handed back by the stop.

    The payloads of `messages` are sub-binaries of one binary: the batch's bytes are copied
    once out of the library (from its borrowed view of the whole batch) and each message points
    into that copy, so the terms stay valid after the ack. Keeping one payload keeps the whole
    batch's binary alive: `:binary.copy/1` a payload you hold for long. (The VM may turn a
    sub-binary of at most 64 bytes into a small heap copy when the process collects garbage.)
    """
    defstruct [:ref, :id, :messages, :highest_offset, :trigger]

    @type t :: %__MODULE__{
            ref: reference(),
            id: non_neg_integer(),
            messages: [Tidemark.BatchBuffer.out_message()],
            highest_offset: Tidemark.offset() | nil,
            trigger: :count | :bytes | :linger | :flush | :stop
          }
  end

  @new_opts [
    :max_messages,
    :max_bytes,
    :linger_ms,
    :linger_us,
    :capacity_messages,
    :capacity_bytes,
    :max_inflight_batches
  ]

  @doc """
  Creates a buffer. Options (defaults from `tidemark_batch_config_default`): `:max_messages`
  (512), `:max_bytes` (1 MiB), `:linger_ms` or `:linger_us` (5 ms), `:capacity_messages`
  (65 536), `:capacity_bytes` (64 MiB), `:max_inflight_batches` (4).
  """
  @spec new(keyword()) :: {:ok, t()} | {:error, Tidemark.reason()}
  def new(opts \\ []) do
    opts = validate!(opts)

    linger_us =
      case {opts[:linger_us], opts[:linger_ms]} do
        {nil, nil} -> nil
        {us, nil} -> us
        {nil, ms} when is_integer(ms) and ms >= 0 -> ms * 1000
        {_, ms} when not is_integer(ms) -> raise ArgumentError, "bad :linger_ms #{inspect(ms)}"
        _ -> raise ArgumentError, "give :linger_ms or :linger_us, not both"
      end

    Native.buffer_new(
      opts[:max_messages],
      opts[:max_bytes],
      linger_us,
      opts[:capacity_messages],
      opts[:capacity_bytes],
      opts[:max_inflight_batches]
    )
  end

  @doc """
  Pushes one message without blocking. Refusals leave the message with the caller:
  `{:error, :full}` (retry later), `:stopping`, `:closed`, `:too_large`.
  """
  @spec push(t(), message()) :: :ok | {:error, Tidemark.reason()}
  def push(buffer, message), do: Native.buffer_push(buffer, message)

  @doc """
  Pushes the longest prefix of `messages` that fits, in one reservation. `{:ok, n}` when all `n`
  were taken; `{:error, reason, accepted}` when only the first `accepted` were (the rest are
  still the caller's: `Enum.drop(messages, accepted)`); `reason` is why the first one left was
  refused: `:full` (retry later), `:stopping`, `:closed`, `:too_large` (that message alone
  exceeds `:capacity_bytes`).

  One NIF call for the whole list: the NIF passes views into the binaries (no copy of its own)
  and the library copies the bytes straight into its arena during the call. A list that is not
  all messages raises `ArgumentError` with nothing taken. Lists above 1000 messages run on a
  dirty CPU scheduler.
  """
  @spec push_many(t(), [message()]) ::
          {:ok, non_neg_integer()} | {:error, Tidemark.reason(), non_neg_integer()}
  def push_many(buffer, messages) when is_list(messages),
    do: Native.buffer_push_many(buffer, messages)

  @doc """
  The sink's non-blocking take: `{:ok, batch}`; `{:would_block, wait_us | :infinity}` when
  nothing is ready (the time until the next linger deadline; `:infinity`: poll again after a
  push or ack); `{:error, :closed}` once the buffer is closed.
  """
  @spec poll_batch(t()) ::
          {:ok, Batch.t()}
          | {:would_block, non_neg_integer() | :infinity}
          | {:error, Tidemark.reason()}
  def poll_batch(buffer) do
    case Native.buffer_poll_batch(buffer) do
      {:ok, tuple} -> {:ok, to_batch(tuple)}
      other -> other
    end
  end

  @doc """
  Registers `pid` (default: the caller) as the process notified for this buffer (replacing an
  earlier one; one sink per buffer) and sends it one `{:tidemark_batch_ready, buffer}` at once,
  so its loop starts by polling. See "A notified sink" above and `poll_batch_notify/1`.
  """
  @spec subscribe(t(), pid()) :: :ok | {:error, Tidemark.reason()}
  def subscribe(buffer, pid \\ self()) when is_pid(pid) do
    case Native.buffer_subscribe(buffer, pid) do
      :ok ->
        send(pid, {:tidemark_batch_ready, buffer})
        :ok

      other ->
        other
    end
  end

  @doc "Removes the subscribed process: later notifications go nowhere."
  @spec unsubscribe(t()) :: :ok | {:error, Tidemark.reason()}
  def unsubscribe(buffer), do: Native.buffer_subscribe(buffer, nil)

  @doc """
  The notified sink's take: like `poll_batch/1` (`{:ok, batch}`, `{:error, :closed}`), and when
  nothing is due it returns `{:would_block, wait_us | :infinity}` *armed*: the subscribed
  process then receives `{:tidemark_batch_ready, buffer}` once, when a push reaches a size
  trigger (or, with nothing buffered, the first message arrives), or an ack, nack or stop
  changes what the sink may take; and, when `wait_us` is finite (a linger or stop deadline),
  a timer sends the same message after it (rounded up to the millisecond: the library does not
  notify linger deadlines). One pending timer per buffer and polling process is kept: a poll
  whose deadline is not earlier than the pending timer's starts none.

  `{:error, :no_subscriber}` when nobody is subscribed (`subscribe/2` first). Messages may be
  spurious; none is lost between the poll and the arming. The timer is the polling process's:
  poll from the subscribed process.
  """
  @spec poll_batch_notify(t()) ::
          {:ok, Batch.t()}
          | {:would_block, non_neg_integer() | :infinity}
          | {:error, Tidemark.reason()}
  def poll_batch_notify(buffer) do
    case Native.buffer_poll_batch_notify(buffer) do
      {:ok, tuple} ->
        {:ok, to_batch(tuple)}

      {:would_block, :infinity, _serial, _pid} ->
        {:would_block, :infinity}

      {:would_block, wait_us, serial, pid} ->
        linger_timer(buffer, serial, pid, wait_us)
        {:would_block, wait_us}

      other ->
        other
    end
  end

  @timers {__MODULE__, :linger_timers}

  # Pending linger timers of this process: buffer serial => {timer_ref, due_ms, pid}. An Erlang
  # timer never fires before its due time (on the monotonic clock it was set with), so one with
  # `due > now` is still pending; entries whose due time passed are dropped as others are added.
  defp linger_timer(buffer, serial, pid, wait_us) do
    ms = div(wait_us + 999, 1000)
    now = System.monotonic_time(:millisecond)
    due = now + ms
    timers = Process.get(@timers, %{})

    case timers do
      %{^serial => {_ref, old_due, ^pid}} when old_due > now and old_due <= due ->
        :ok

      _ ->
        case timers do
          %{^serial => {ref, old_due, _}} when old_due > now ->
            Process.cancel_timer(ref, async: true, info: false)

          _ ->
            :ok
        end

        ref = Process.send_after(pid, {:tidemark_batch_ready, buffer}, ms)

        timers =
          if map_size(timers) >= 8,
            do: for({k, {_, d, _} = v} <- timers, d > now, into: %{}, do: {k, v}),
            else: timers

        Process.put(@timers, Map.put(timers, serial, {ref, due, pid}))
        :ok
    end
  end

  defp to_batch({ref, id, messages, highest, trigger}),
    do: %Batch{ref: ref, id: id, messages: messages, highest_offset: highest, trigger: trigger}

  @doc "Acknowledges a delivered batch (`{:error, :not_in_flight}` if it was already settled)."
  @spec ack(t(), Batch.t()) :: :ok | {:error, Tidemark.reason()}
  def ack(buffer, %Batch{ref: ref}), do: Native.buffer_ack(buffer, ref)

  @doc "Gives a batch back: with `requeue: true` ahead of newer messages, otherwise failed."
  @spec nack(t(), Batch.t(), boolean()) :: :ok | {:error, Tidemark.reason()}
  def nack(buffer, %Batch{ref: ref}, requeue) when is_boolean(requeue),
    do: Native.buffer_nack(buffer, ref, requeue)

  @doc """
  Emits everything buffered now (ignoring linger). With `timeout_ms` 0 it only marks them due
  (`:ok` only when nothing was buffered, else `{:error, :timeout}`); otherwise it waits on a
  dirty IO scheduler until they are acked or failed: `:ok`, `{:error, :timeout}`,
  `{:error, :closed}`.
  """
  @spec flush(t(), non_neg_integer()) :: :ok | {:error, Tidemark.reason()}
  def flush(buffer, timeout_ms) when is_integer(timeout_ms) and timeout_ms >= 0 do
    if timeout_ms == 0,
      do: Native.buffer_flush(buffer, 0),
      else: Native.buffer_flush_wait(buffer, timeout_ms)
  end

  @doc """
  Stops: closes admission, emits everything queued at once, gives batches in flight up to
  `timeout_ms` to be acked, then hands back the rest. Waits on a dirty IO scheduler. Returns
  `{:ok, report}`:

      %{accepted: n, delivered: n, failed: n, handed_back_count: n,
        handed_back: [{payload, offset | nil, outcome_unknown?}],   # original order
        handed_back_messages: [{payload, offset | nil}],   # the same, as push_many/2 takes them
        outcome_unknown: [boolean],                        # parallel to handed_back_messages
        in_flight_unknown: n, unknown_batches: n, timed_out: boolean}

  with `accepted == delivered + failed + handed_back_count`. `outcome_unknown?` is true for
  each handed-back message whose batch was still in flight at the deadline (the sink may have
  stored it). `handed_back_messages` and `outcome_unknown` are
  `handed_back` split in two, same order: requeue into another buffer with
  `push_many(other, report.handed_back_messages)`, no reshaping. Every caller gets the same
  report.
  """
  @spec stop(t(), non_neg_integer()) :: {:ok, stop_report()} | {:error, Tidemark.reason()}
  def stop(buffer, timeout_ms) when is_integer(timeout_ms) and timeout_ms >= 0,
    do: Native.buffer_stop(buffer, timeout_ms)

  @doc """
  Stops like `stop/2` without blocking the caller: admission is closed when it returns, the
  drain runs on (batches in flight get `timeout_ms` to be acked), and the report arrives as a
  message `{:tidemark_stopped, ref, report}` (`report` as in `stop/2`, without the `{:ok, _}`)
  once everything is resolved or the deadline passed (`{:error, reason}` in its place only if
  the library failed: a bug). Returns `ref`.

  The caller may be the buffer's sink: it keeps receiving `{:tidemark_batch_ready, buffer}`,
  taking the batches the stop emits and acking them while the drain runs; its last ack (or the
  deadline) completes the stop, and `poll_batch_notify/1` then returns `{:error, :closed}`.
  A small watcher process waits for the end (woken by every ack, nack and close of this
  buffer, and by the deadline: no polling) and the report is built in the message it sends
  (on a dirty CPU scheduler above 1000 handed-back messages). Several stops: the earliest
  deadline wins and every caller gets the same report.
  """
  @spec stop_async(t(), non_neg_integer()) :: reference()
  def stop_async(buffer, timeout_ms) when is_integer(timeout_ms) and timeout_ms >= 0 do
    ref = make_ref()
    caller = self()
    :ok = Native.buffer_begin_stop(buffer, timeout_ms)
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    spawn(fn -> stop_watcher(buffer, caller, ref, deadline) end)
    ref
  end

  defp stop_watcher(buffer, caller, ref, deadline) do
    mon = Process.monitor(caller)
    # Watch first, then look: an ack that finishes the stop after our look pings us.
    :ok = Native.buffer_stop_watch(buffer, self(), true)

    try do
      watch_stop(buffer, caller, ref, deadline, mon)
    after
      Native.buffer_stop_watch(buffer, self(), false)
    end
  end

  defp watch_stop(buffer, caller, ref, deadline, mon) do
    case Native.buffer_poll_stop_send(buffer, caller, ref) do
      :would_block ->
        # Past the deadline the library finishes at the next look (a push still publishing
        # can hold it back for microseconds): look again every millisecond until then.
        timeout = max(deadline - System.monotonic_time(:millisecond), 1)

        receive do
          {:tidemark_stop_progress, ^buffer} -> watch_stop(buffer, caller, ref, deadline, mon)
          {:DOWN, ^mon, :process, _, _} -> :ok
        after
          timeout -> watch_stop(buffer, caller, ref, deadline, mon)
        end

      :ok ->
        :ok

      {:error, _} = error ->
        send(caller, {:tidemark_stopped, ref, error})
    end
  end

  @doc "Counters and gauges."
  @spec stats(t()) :: {:ok, map()} | {:error, Tidemark.reason()}
  def stats(buffer), do: Native.buffer_stats(buffer)

  defp validate!(opts) when is_list(opts) do
    case Keyword.keys(opts) -- @new_opts do
      [] -> opts
      unknown -> raise ArgumentError, "unknown options #{inspect(unknown)}"
    end
  end

  defp validate!(opts), do: raise(ArgumentError, "expected a keyword list, got: #{inspect(opts)}")
end
