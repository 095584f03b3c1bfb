defmodule Tidemark.BatchBuffer do
  @moduledoc """
  A batch buffer (docs/CONTRACT.md §5): many producers push messages, one sink takes batches by
  count, bytes or linger (age of the batch's first message), and `stop/2` closes admission, drains,
  and hands back — in order — everything the sink did not acknowledge by the deadline.

  Messages are binaries, or `{binary, offset}` with `offset = {tx, op}` (or `nil`). A batch's
  `messages` and a stop report's `handed_back_messages` are `{binary, offset | nil}`
  (`t:out_message/0`), which `push/2` and `push_many/2` take as they are: requeueing needs no
  reshaping. (A stop report's `handed_back` keeps its first-release shape,
  `{payload, offset | nil, outcome_unknown?}`; see `stop/2`.)

  Every call is non-blocking on a normal scheduler except `flush/2` with a timeout and `stop/2`,
  which wait on a dirty IO scheduler (the sink keeps running in other processes meanwhile).
  Malformed arguments raise `ArgumentError`.
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
  still the caller's: `Enum.drop(messages, accepted)`).
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
      {:ok, {ref, id, messages, highest, trigger}} ->
        {:ok,
         %Batch{ref: ref, id: id, messages: messages, highest_offset: highest, trigger: trigger}}

      other ->
        other
    end
  end

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
  stored it). `handed_back_messages` and `outcome_unknown` (added after the first release) are
  `handed_back` split in two, same order: requeue into another buffer with
  `push_many(other, report.handed_back_messages)`, no reshaping. Every caller gets the same
  report.
  """
  @spec stop(t(), non_neg_integer()) :: {:ok, stop_report()} | {:error, Tidemark.reason()}
  def stop(buffer, timeout_ms) when is_integer(timeout_ms) and timeout_ms >= 0,
    do: Native.buffer_stop(buffer, timeout_ms)

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
