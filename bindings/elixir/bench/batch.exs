# Batch path throughput: producers push 64-byte messages, one sink takes batches (count 512,
# linger 5 ms; 65 536 messages held at most, 4 batches in flight) and acks them. The run ends
# when the sink has acked every message; messages/s = messages / (first push .. last ack).
# Every run starts with an untimed warm-up of 2^16 messages through the same pipeline (the
# buffer's arena is allocated on the first push and faulted in on its first pass; the
# GenServers grow their heaps), so the figures are steady state.
#
#   mix run bench/batch.exs            # 2^20 messages per run (2^18 for the per-message rows),
#                                      # 3 rounds interleaved, median
#   mix run bench/batch.exs --quick    # smoke: 2^16 messages (2^14), 1 round
#
# Rows, for 1 and 2 producer processes:
#
#   * tidemark push_many: `BatchBuffer.push_many/2` of 256-message lists, and a notified sink
#     (`subscribe/2` + `poll_batch_notify/1`: a plain receive loop, no sleep-and-poll) that acks
#     each batch; on `{:error, :full, n}` a producer yields and pushes the rest;
#   * tidemark push: the same with `BatchBuffer.push/2`, one message per call;
#   * GenServer list: bench/genserver_batcher.ex, a pure-Elixir GenServer with the same triggers
#     and bounds, fed with `GenServer.call` of the same 256-message lists (the batcher sends each
#     batch to the sink process, which acks with a cast);
#   * GenServer msg: the same batcher fed one `GenServer.call` per message.
#
# The sink touches every batch the same way in all rows (it counts the messages of the list it
# was handed). Payloads are built before the clock starts.

Code.require_file("genserver_batcher.ex", __DIR__)

defmodule Tidemark.Bench.BatchBench do
  import Bitwise

  alias Tidemark.BatchBuffer
  alias Tidemark.Bench.GenServerBatcher, as: GB

  @chunk 256
  @max 512
  @linger_ms 5
  # 65 536 messages of 64 bytes: the same bound as the message capacity (the GenServer has no
  # byte bound), and an arena of 4 MiB instead of the default 64 MiB.
  @capacity_bytes 65_536 * 64
  @warm 1 <<< 16
  @modes [:tm_many, :tm_one, :gs_many, :gs_one]

  def main(args) do
    quick = "--quick" in args
    total = if quick, do: 1 <<< 16, else: 1 <<< 20
    rounds = if quick, do: 1, else: 3

    IO.puts(
      "tidemark #{Tidemark.native_version()}, #{System.schedulers_online()} schedulers, " <>
        "OTP #{System.otp_release()}, Elixir #{System.version()}"
    )

    IO.puts(
      "64-byte messages, count #{@max} / linger #{@linger_ms} ms; #{total} messages per run " <>
        "(#{div(total, 4)} for the per-message rows), #{rounds} round(s), median messages/s\n"
    )

    IO.puts(
      "| producers | tidemark push_many(#{@chunk}) | tidemark push | GenServer list(#{@chunk}) " <>
        "| GenServer msg | push_many / GenServer list | push_many / GenServer msg |"
    )

    IO.puts("| --- | --- | --- | --- | --- | --- | --- |")

    for producers <- [1, 2] do
      runs =
        for _ <- 1..rounds do
          for mode <- @modes, into: %{} do
            n = if mode in [:tm_one, :gs_one], do: div(total, 4), else: total
            {mode, run(mode, producers, n)}
          end
        end

      m = for mode <- @modes, into: %{}, do: {mode, median(Enum.map(runs, & &1[mode]))}

      IO.puts(
        "| #{producers} | #{fmt(m.tm_many)} | #{fmt(m.tm_one)} | #{fmt(m.gs_many)} | " <>
          "#{fmt(m.gs_one)} | **#{ratio(m.tm_many, m.gs_many)}×** | #{ratio(m.tm_many, m.gs_one)}× |"
      )
    end
  end

  # Messages/s of one run (after the warm-up).
  def run(mode, producers, total) do
    :erlang.garbage_collect()
    parent = self()
    {push, stop} = setup(mode, parent, [@warm, @warm + total])
    receive do: (:sink_ready -> :ok)

    pids =
      for p <- 1..producers do
        chunk = for i <- 1..@chunk, do: <<p::8, i::16, :binary.copy("x", 61)::binary>>

        spawn_link(fn ->
          for n <- [@warm, total] do
            receive do: (:go -> :ok)
            produce(push, mode, chunk, div(div(n, producers), @chunk))
            send(parent, :produced)
          end
        end)
      end

    phase(pids, @warm)
    t0 = System.monotonic_time(:nanosecond)
    phase(pids, @warm + total)
    elapsed = System.monotonic_time(:nanosecond) - t0
    stop.()
    total * 1.0e9 / elapsed
  end

  # Lets the producers push their share and waits until the sink has taken `upto` in all.
  defp phase(pids, upto) do
    for pid <- pids, do: send(pid, :go)

    receive do
      {:sink_done, ^upto} -> :ok
    end

    for _ <- pids, do: receive(do: (:produced -> :ok))
  end

  defp produce(_push, _mode, _chunk, 0), do: :ok

  defp produce(push, mode, chunk, left) when mode in [:tm_many, :gs_many] do
    push_list(push, chunk)
    produce(push, mode, chunk, left - 1)
  end

  defp produce(push, mode, chunk, left) do
    Enum.each(chunk, &push_one(push, &1))
    produce(push, mode, chunk, left - 1)
  end

  defp push_list(push, msgs) do
    case push.(msgs) do
      {:ok, _} ->
        :ok

      {:error, :full, n} ->
        :erlang.yield()
        push_list(push, Enum.drop(msgs, n))
    end
  end

  defp push_one(push, msg) do
    case push.(msg) do
      :ok ->
        :ok

      {:error, :full} ->
        :erlang.yield()
        push_one(push, msg)
    end
  end

  # {push function, teardown}; the sink process is started, says :sink_ready, and reports
  # {:sink_done, n} when it has taken n messages, for each n of `marks`.
  defp setup(mode, parent, marks) when mode in [:tm_many, :tm_one] do
    {:ok, b} =
      BatchBuffer.new(max_messages: @max, linger_ms: @linger_ms, capacity_bytes: @capacity_bytes)

    spawn_link(fn ->
      :ok = BatchBuffer.subscribe(b)
      send(parent, :sink_ready)
      tm_sink(b, parent, marks, 0)
    end)

    push =
      if mode == :tm_many,
        do: &BatchBuffer.push_many(b, &1),
        else: &BatchBuffer.push(b, &1)

    {push, fn -> {:ok, _} = BatchBuffer.stop(b, 1_000) end}
  end

  defp setup(mode, parent, marks) do
    sink =
      spawn_link(fn ->
        send(parent, :sink_ready)
        gs_sink(parent, marks, 0)
      end)

    {:ok, gb} =
      GB.start_link(
        sink: sink,
        max: @max,
        linger_ms: @linger_ms,
        capacity: 65_536,
        max_inflight: 4
      )

    push =
      if mode == :gs_many,
        do: &GB.push_many(gb, &1),
        else: &GB.push(gb, &1)

    {push, fn -> GenServer.stop(gb) end}
  end

  # The notified sink: a plain receive loop.
  defp tm_sink(_b, _parent, [], _got), do: :ok

  defp tm_sink(b, parent, [mark | rest], got) when got >= mark do
    send(parent, {:sink_done, got})
    tm_sink(b, parent, rest, got)
  end

  defp tm_sink(b, parent, marks, got) do
    receive do
      {:tidemark_batch_ready, ^b} -> tm_drain(b, parent, marks, got)
    end
  end

  defp tm_drain(b, parent, marks, got) do
    case BatchBuffer.poll_batch_notify(b) do
      {:ok, batch} ->
        n = length(batch.messages)
        :ok = BatchBuffer.ack(b, batch)
        tm_drain(b, parent, marks, got + n)

      {:would_block, _} ->
        tm_sink(b, parent, marks, got)
    end
  end

  defp gs_sink(_parent, [], _got), do: :ok

  defp gs_sink(parent, [mark | rest], got) when got >= mark do
    send(parent, {:sink_done, got})
    gs_sink(parent, rest, got)
  end

  defp gs_sink(parent, marks, got) do
    receive do
      {:batch, from, ref, msgs} ->
        n = length(msgs)
        GB.ack(from, ref)
        gs_sink(parent, marks, got + n)
    end
  end

  defp median(xs), do: xs |> Enum.sort() |> Enum.at(div(length(xs), 2))

  defp fmt(rate) when rate >= 1.0e6, do: "#{Float.round(rate / 1.0e6, 2)} M/s"
  defp fmt(rate), do: "#{round(rate / 1000)} k/s"

  defp ratio(a, b), do: Float.round(a / b, 2)
end

Tidemark.Bench.BatchBench.main(System.argv())
