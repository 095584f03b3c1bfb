defmodule Tidemark.Bench.GenServerBatcher do
  @moduledoc """
  The pure-Elixir baseline of `bench/batch.exs`: one GenServer batching like
  `Tidemark.BatchBuffer` with the same triggers and bounds (count `max_messages`, linger
  `linger_ms` from the batch's first message, at most `capacity` messages held and
  `max_inflight` batches handed out and not yet acked).

  Producers call `push/2` (one message per call) or `push_many/2` (a list per call: the longest
  prefix that fits, `{:ok, n}` or `{:error, :full, accepted}`, like `BatchBuffer.push_many/2`).
  The batcher sends `{:batch, batcher, ref, messages}` to the sink, which acks with `ack/2`.
  """
  use GenServer

  defstruct [
    :sink,
    max: 512,
    linger_ms: 5,
    capacity: 65_536,
    max_inflight: 4,
    # The batch being filled (newest first), its size, and the generation tagging its timer.
    cur: [],
    cur_n: 0,
    gen: 0,
    # Full batches waiting for an in-flight slot: {list, n}.
    ready: :queue.new(),
    # Messages held (filling + ready + in flight), and the batches in flight: ref => n.
    held: 0,
    inflight: %{}
  ]

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @spec push(GenServer.server(), term()) :: :ok | {:error, :full}
  def push(b, msg), do: GenServer.call(b, {:push, msg}, :infinity)

  @spec push_many(GenServer.server(), [term()]) ::
          {:ok, non_neg_integer()} | {:error, :full, non_neg_integer()}
  def push_many(b, msgs), do: GenServer.call(b, {:push_many, msgs}, :infinity)

  def ack(b, ref), do: GenServer.cast(b, {:ack, ref})

  @impl true
  def init(opts), do: {:ok, struct!(__MODULE__, opts)}

  @impl true
  def handle_call({:push, _msg}, _from, %{held: held, capacity: cap} = s) when held >= cap,
    do: {:reply, {:error, :full}, s}

  def handle_call({:push, msg}, _from, s), do: {:reply, :ok, add([msg], s)}

  def handle_call({:push_many, msgs}, _from, %{held: held, capacity: cap} = s) do
    room = cap - held
    n = length(msgs)

    if n <= room do
      {:reply, {:ok, n}, add(msgs, s)}
    else
      {:reply, {:error, :full, room}, add(Enum.take(msgs, room), s)}
    end
  end

  @impl true
  def handle_cast({:ack, ref}, s) do
    {n, inflight} = Map.pop!(s.inflight, ref)
    {:noreply, dispatch(%{s | inflight: inflight, held: s.held - n})}
  end

  @impl true
  def handle_info({:linger, gen}, %{gen: gen, cur_n: n} = s) when n > 0,
    do: {:noreply, s |> emit() |> dispatch()}

  def handle_info({:linger, _stale}, s), do: {:noreply, s}

  # Appends messages one by one; a batch that reaches the count is emitted at once.
  defp add([], s), do: dispatch(s)

  defp add([m | rest], %{cur_n: 0} = s) do
    gen = s.gen + 1
    Process.send_after(self(), {:linger, gen}, s.linger_ms)
    add(rest, maybe_emit(%{s | cur: [m], cur_n: 1, gen: gen, held: s.held + 1}))
  end

  defp add([m | rest], s),
    do: add(rest, maybe_emit(%{s | cur: [m | s.cur], cur_n: s.cur_n + 1, held: s.held + 1}))

  defp maybe_emit(%{cur_n: n, max: max} = s) when n >= max, do: emit(s)
  defp maybe_emit(s), do: s

  defp emit(%{cur: cur, cur_n: n, ready: ready} = s),
    # The generation moves on: this batch's linger timer is stale now.
    do: %{s | cur: [], cur_n: 0, gen: s.gen + 1, ready: :queue.in({Enum.reverse(cur), n}, ready)}

  defp dispatch(%{inflight: inflight, max_inflight: max} = s) when map_size(inflight) >= max,
    do: s

  defp dispatch(s) do
    case :queue.out(s.ready) do
      {{:value, {batch, n}}, ready} ->
        ref = make_ref()
        send(s.sink, {:batch, self(), ref, batch})
        dispatch(%{s | ready: ready, inflight: Map.put(s.inflight, ref, n)})

      {:empty, _} ->
        s
    end
  end
end
