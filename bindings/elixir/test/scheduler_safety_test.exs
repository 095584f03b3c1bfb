defmodule Tidemark.SchedulerSafetyTest do
  # Not async: it prints per-call costs, which other tests running beside it would distort.
  use ExUnit.Case, async: false

  alias Tidemark.{BatchBuffer, Tracker}

  @calls 100_000

  # What is checked. A NIF on a normal scheduler must return within about 1 ms. That bound is
  # not asserted with a clock: these VMs charge interrupt and VM-exit time to whatever thread
  # runs, so a constant 4.5 µs C body has read as 2.8 ms of thread CPU time (reproduced without
  # BEAM or tidemark), and any test with a CPU-time or wall-clock maximum flakes. The test runs
  # every call kind 100 000 times and checks its results; the per-call CPU and wall figures are
  # printed for the reader, never compared with a limit.
  #
  # Dirty NIFs (sweep) run on a dirty scheduler by design (their cost grows with the writers
  # they act on), so they never occupy a normal scheduler; their wall-clock figures are printed.
  defp measured(fun) do
    task =
      Task.async(fn ->
        Process.flag(:priority, :high)
        fun.()
      end)

    Task.await(task, 300_000)
  end

  @kinds [
    :register_writer,
    :commit,
    :pause,
    :resume,
    :touch,
    :flushed,
    :flushed_many,
    :remove,
    :ack,
    :pinning,
    :sweep,
    :take_events,
    :writer_status,
    :stats,
    :unregister,
    :push,
    :push_many,
    :poll_batch,
    :ack_or_nack,
    :flush_nonblocking,
    :buffer_stats,
    :poll_empty
  ]
  @dirty [:sweep]
  @index @kinds |> Enum.with_index() |> Map.new()
  # Per kind: samples, cpu total, cpu max, migrated, wall max.
  @slots 5

  defp new_acc do
    %{
      stats: :atomics.new(@slots * length(@kinds), signed: false),
      dirty_wall: :atomics.new(@calls, signed: false)
    }
  end

  defmacrop timed(acc, kind, call) do
    i = Map.fetch!(@index, kind) * @slots
    dirty? = kind in @dirty

    quote do
      {tid0, c0} = Tidemark.Native.thread_clock()
      t0 = :erlang.monotonic_time(:nanosecond)
      result = unquote(call)
      wall = :erlang.monotonic_time(:nanosecond) - t0
      {tid1, c1} = Tidemark.Native.thread_clock()
      %{stats: st, dirty_wall: dw} = unquote(acc)
      n = :atomics.add_get(st, unquote(i + 1), 1)

      if unquote(dirty?), do: :atomics.put(dw, n, wall)

      if tid0 == tid1 do
        cpu = c1 - c0
        :atomics.add(st, unquote(i + 2), cpu)
        if cpu > :atomics.get(st, unquote(i + 3)), do: :atomics.put(st, unquote(i + 3), cpu)
      else
        :atomics.add(st, unquote(i + 4), 1)
      end

      if wall > :atomics.get(st, unquote(i + 5)), do: :atomics.put(st, unquote(i + 5), wall)
      result
    end
  end

  defp us(ns), do: Float.round(ns / 1000, 1)

  defp report(%{stats: st, dirty_wall: dw}, kinds) do
    for kind <- kinds do
      i = Map.fetch!(@index, kind) * @slots
      [n, tot, cpu_max, migrated, wall_max] = for k <- 1..@slots, do: :atomics.get(st, i + k)

      if kind in @dirty do
        walls = Enum.sort(for k <- 1..n, do: :atomics.get(dw, k))
        p999 = Enum.at(walls, trunc(n * 0.999))
        mean = div(Enum.sum(walls), max(n, 1))

        IO.puts(
          "  #{String.pad_trailing(to_string(kind), 18)} #{n} calls (dirty)  wall mean #{mean} ns" <>
            "  p99.9 #{us(p999)} µs  max #{us(wall_max)} µs"
        )

        {kind, n, 0, p999}
      else
        mean = div(tot, max(n - migrated, 1))

        IO.puts(
          "  #{String.pad_trailing(to_string(kind), 18)} #{n} calls  cpu mean #{mean} ns" <>
            "  cpu max #{us(cpu_max)} µs  (wall max #{us(wall_max)} µs, #{migrated} migrated)"
        )

        {kind, n, migrated, cpu_max}
      end
    end
  end

  defp assert_all_ran(rows) do
    for {kind, n, _migrated, _cost_ns} <- rows do
      assert n == @calls, "#{kind}: #{n} calls"
    end
  end

  @tag timeout: 600_000
  test "tracker: 100 000 calls of each kind, results checked, costs printed" do
    rows =
      measured(fn ->
        acc = new_acc()
        {:ok, t} = Tracker.new(subscriber: self(), grace_ms: 60_000)
        holder = spawn(fn -> Process.sleep(:infinity) end)
        ids = :atomics.new(@calls, signed: false)

        for i <- 1..@calls do
          {:ok, w} = timed(acc, :register_writer, Tracker.register_writer(t, holder))
          :atomics.put(ids, i, w)
        end

        w = fn i -> :atomics.get(ids, rem(i, @calls) + 1) end

        for i <- 1..@calls do
          off = {i, 0}
          batch = [w.(i), w.(i + 1), w.(i + 2), w.(i + 3)]
          :ok = timed(acc, :commit, Tracker.commit(t, off, batch))
          :ok = timed(acc, :pause, Tracker.pause(t, w.(i + 1)))
          :ok = timed(acc, :resume, Tracker.resume(t, w.(i + 1)))
          :ok = timed(acc, :touch, Tracker.touch(t, w.(i + 2)))
          :ok = timed(acc, :flushed, Tracker.flushed(t, w.(i), off))

          {:ok, []} =
            timed(
              acc,
              :flushed_many,
              Tracker.flushed_many(t, [{w.(i + 1), off}, {w.(i + 2), off}])
            )

          :ok = timed(acc, :remove, Tracker.remove(t, w.(i + 3)))
          {:ok, _} = timed(acc, :ack, Tracker.ack(t))
          _ = timed(acc, :pinning, Tracker.pinning(t))
          {:ok, _} = timed(acc, :sweep, Tracker.sweep(t))
          {:ok, _} = timed(acc, :take_events, Tracker.take_events(t))
          {:ok, _} = timed(acc, :writer_status, Tracker.writer_status(t, w.(i)))
          {:ok, _} = timed(acc, :stats, Tracker.stats(t))
          # Keep the mailbox small: an ack message arrives for most commits.
          flush_mailbox()
        end

        assert {:ok, @calls} = Tracker.ack(t)

        for i <- 1..@calls do
          :ok = timed(acc, :unregister, Tracker.unregister(t, :atomics.get(ids, i)))
        end

        report(acc, [
          :register_writer,
          :commit,
          :flushed,
          :flushed_many,
          :remove,
          :touch,
          :pause,
          :resume,
          :sweep,
          :ack,
          :pinning,
          :stats,
          :take_events,
          :writer_status,
          :unregister
        ])
      end)

    assert_all_ran(rows)
  end

  @tag timeout: 600_000
  test "batch buffer: 100 000 calls of each kind, results checked, costs printed" do
    rows =
      measured(fn ->
        acc = new_acc()
        {:ok, b} = BatchBuffer.new(max_messages: 9, linger_ms: 60_000, capacity_messages: 64)
        payload = :binary.copy("x", 64)
        many = List.duplicate(payload, 8)

        for i <- 1..@calls do
          :ok = timed(acc, :push, BatchBuffer.push(b, {payload, {i, 0}}))
          {:ok, 8} = timed(acc, :push_many, BatchBuffer.push_many(b, many))
          # 9 messages: exactly one count-triggered batch.
          {:ok, batch} = timed(acc, :poll_batch, BatchBuffer.poll_batch(b))

          :ok =
            if rem(i, 2) == 0,
              do: timed(acc, :ack_or_nack, BatchBuffer.ack(b, batch)),
              else: timed(acc, :ack_or_nack, BatchBuffer.nack(b, batch, false))

          _ = timed(acc, :flush_nonblocking, BatchBuffer.flush(b, 0))
          {:ok, _} = timed(acc, :buffer_stats, BatchBuffer.stats(b))
          {:would_block, _} = timed(acc, :poll_empty, BatchBuffer.poll_batch(b))
        end

        {:ok, report} = BatchBuffer.stop(b, 0)
        assert report.accepted == @calls * 9
        assert report.accepted == report.delivered + report.failed + report.handed_back_count

        report(acc, [
          :push,
          :push_many,
          :poll_batch,
          :ack_or_nack,
          :flush_nonblocking,
          :buffer_stats,
          :poll_empty
        ])
      end)

    assert_all_ran(rows)
  end

  defp flush_mailbox do
    receive do
      _ -> flush_mailbox()
    after
      0 -> :ok
    end
  end
end
