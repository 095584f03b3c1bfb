defmodule Tidemark.BatchNotifyTest do
  # The second-generation batch path: push_many partial accepts, batches as sub-binaries of one
  # binary, the notified sink (subscribe + poll_batch_notify: a plain receive loop) and the
  # asynchronous stop. No wall-clock assertions: every `after` below is a failure timeout
  # ("this message never came"), never a measurement.
  use ExUnit.Case, async: true

  alias Tidemark.BatchBuffer

  @never 60_000_000

  # Receives the next {:tidemark_batch_ready, b}; flunks when none comes (a lost wake-up).
  defp await_ready(b, what) do
    receive do
      {:tidemark_batch_ready, ^b} -> :ok
    after
      10_000 -> flunk("no #{what} within 10 s (lost wake-up)")
    end
  end

  defp drain_ready(b) do
    receive do
      {:tidemark_batch_ready, ^b} -> drain_ready(b)
    after
      0 -> :ok
    end
  end

  defp push_all(b, msgs) do
    case BatchBuffer.push_many(b, msgs) do
      {:ok, _} ->
        :ok

      {:error, :full, n} ->
        :erlang.yield()
        push_all(b, Enum.drop(msgs, n))
    end
  end

  # A notified sink: the plain receive loop of the moduledoc. Acks everything, reports every
  # message and the number of times it went to sleep armed, until `total` messages arrived.
  defp notified_sink(b, parent, total) do
    spawn_link(fn ->
      :ok = BatchBuffer.subscribe(b)
      sink_loop(b, parent, total, 0, 0)
    end)
  end

  defp sink_loop(_b, parent, total, got, sleeps) when got >= total do
    send(parent, {:sink_done, got, sleeps})
    # Stay alive (and subscribed) until the test ends.
    receive do
      :exit -> :ok
    end
  end

  defp sink_loop(b, parent, total, got, sleeps) do
    receive do
      {:tidemark_batch_ready, ^b} -> sink_drain(b, parent, total, got, sleeps)
    after
      10_000 -> send(parent, {:sink_stalled, got, BatchBuffer.stats(b)})
    end
  end

  defp sink_drain(b, parent, total, got, sleeps) do
    case BatchBuffer.poll_batch_notify(b) do
      {:ok, batch} ->
        :ok = BatchBuffer.ack(b, batch)
        send(parent, {:delivered, Enum.map(batch.messages, &elem(&1, 0))})
        sink_drain(b, parent, total, got + length(batch.messages), sleeps)

      {:would_block, _} ->
        sink_loop(b, parent, total, got, sleeps + 1)
    end
  end

  # Chunks of 1 to 3 messages.
  defp random_chunks([], acc), do: Enum.reverse(acc)

  defp random_chunks(msgs, acc) do
    {chunk, rest} = Enum.split(msgs, :rand.uniform(3))
    random_chunks(rest, [chunk | acc])
  end

  defp collect(acc) do
    receive do
      {:delivered, ms} -> collect([ms | acc])
    after
      0 -> acc |> Enum.reverse() |> Enum.concat()
    end
  end

  describe "notified sink" do
    test "no lost wake-up when pushes from other processes race the sink going to sleep" do
      # Linger far away: only the count trigger emits, so every batch needs a notification.
      # max_messages 1: every push is a trigger (and the first message after idle);
      # 8: a batch is due only at its eighth message, pushed in chunks of 1 to 3.
      for {max, producers, per_producer} <- [{1, 2, 4_000}, {8, 3, 1_600}] do
        {:ok, b} =
          BatchBuffer.new(
            max_messages: max,
            linger_us: @never,
            capacity_messages: 64,
            max_inflight_batches: 2
          )

        total = producers * per_producer
        parent = self()
        notified_sink(b, parent, total)

        for p <- 1..producers do
          spawn_link(fn ->
            :rand.seed(:exsss, {p, max, 7})
            msgs = for n <- 1..per_producer, do: "p#{p}-#{n}"

            msgs
            |> random_chunks([])
            |> Enum.each(fn chunk ->
              push_all(b, chunk)
              # Slower than the sink on average, so it goes to sleep again and again while
              # the other producers push.
              for _ <- 1..:rand.uniform(4), do: :erlang.yield()
            end)

            send(parent, {:producer_done, p})
          end)
        end

        for p <- 1..producers, do: assert_receive({:producer_done, ^p}, 30_000)

        receive do
          {:sink_done, got, sleeps} ->
            assert got == total
            # The sink really did go to sleep (and was woken) over and over.
            assert sleeps > 0

          {:sink_stalled, got, stats} ->
            flunk("sink stalled at #{got}/#{total} messages (lost wake-up): #{inspect(stats)}")
        after
          30_000 -> flunk("the sink did not finish")
        end

        delivered = collect([])
        assert length(delivered) == total
        # Exactly once, in order per producer.
        for p <- 1..producers do
          ns =
            for "p" <> rest <- delivered,
                [^p, n] <- [rest |> String.split("-") |> Enum.map(&String.to_integer/1)],
                do: n

          assert ns == Enum.to_list(1..per_producer)
        end

        {:ok, report} = BatchBuffer.stop(b, 1_000)
        assert report.delivered == total
        assert report.handed_back_count == 0
      end
    end

    test "linger expiry arrives as a message: a plain receive loop, no polling in between" do
      {:ok, b} = BatchBuffer.new(max_messages: 100, linger_ms: 30)
      :ok = BatchBuffer.subscribe(b)
      await_ready(b, "initial notification")
      assert {:would_block, :infinity} = BatchBuffer.poll_batch_notify(b)

      # From another process, below the count trigger: only the linger can emit these.
      spawn_link(fn -> {:ok, 3} = BatchBuffer.push_many(b, ["a", "b", {"c", {7, 1}}]) end)

      # The first message after idle wakes the sink; it finds the batch lingering (a finite
      # wait) and sleeps again; the linger timer wakes it once more.
      {batch, wakeups, finite_waits} = linger_loop(b, 0, 0)
      assert batch.trigger == :linger
      assert batch.messages == [{"a", nil}, {"b", nil}, {"c", {7, 1}}]
      assert batch.highest_offset == {7, 1}
      assert wakeups >= 2
      assert finite_waits >= 1
      :ok = BatchBuffer.ack(b, batch)

      # And again with no push in between at all: the only wake-up is the linger timer.
      assert {:would_block, :infinity} = BatchBuffer.poll_batch_notify(b)
      assert {:ok, 1} = BatchBuffer.push_many(b, ["late"])
      drain_ready(b)
      assert {:would_block, wait} = BatchBuffer.poll_batch_notify(b)
      assert is_integer(wait)
      {again, _, _} = linger_loop(b, 0, 0)
      assert again.trigger == :linger
      assert again.messages == [{"late", nil}]
      :ok = BatchBuffer.ack(b, again)
      {:ok, _} = BatchBuffer.stop(b, 100)
    end

    defp linger_loop(b, wakeups, finite) do
      await_ready(b, "linger notification")

      case BatchBuffer.poll_batch_notify(b) do
        {:ok, batch} -> {batch, wakeups + 1, finite}
        {:would_block, :infinity} -> linger_loop(b, wakeups + 1, finite)
        {:would_block, _us} -> linger_loop(b, wakeups + 1, finite + 1)
      end
    end

    test "subscribe: first message at once, one sink at a time, unsubscribe" do
      {:ok, b} = BatchBuffer.new(max_messages: 2, linger_us: @never)
      assert {:error, :no_subscriber} = BatchBuffer.poll_batch_notify(b)
      :ok = BatchBuffer.subscribe(b)
      await_ready(b, "initial notification")
      assert {:would_block, :infinity} = BatchBuffer.poll_batch_notify(b)

      # Another process takes over: the armed notification goes to it.
      parent = self()

      other =
        spawn_link(fn ->
          receive do
            {:tidemark_batch_ready, ^b} = m -> send(parent, {:other_got, m})
          end

          receive do
            {:tidemark_batch_ready, ^b} = m -> send(parent, {:other_got, m})
          end
        end)

      :ok = BatchBuffer.subscribe(b, other)
      assert_receive {:other_got, {:tidemark_batch_ready, ^b}}, 5_000
      {:ok, 2} = BatchBuffer.push_many(b, ["x", "y"])
      assert_receive {:other_got, {:tidemark_batch_ready, ^b}}, 5_000
      refute_received {:tidemark_batch_ready, ^b}

      :ok = BatchBuffer.unsubscribe(b)
      assert {:error, :no_subscriber} = BatchBuffer.poll_batch_notify(b)
      {:ok, batch} = BatchBuffer.poll_batch(b)
      :ok = BatchBuffer.ack(b, batch)
      {:ok, _} = BatchBuffer.stop(b, 0)
    end

    test "notifications from dirty schedulers: a long push_many and a blocking stop" do
      {:ok, b} = BatchBuffer.new(max_messages: 2_000, linger_us: @never, capacity_messages: 4_096)

      :ok = BatchBuffer.subscribe(b)
      await_ready(b, "initial notification")
      assert {:would_block, :infinity} = BatchBuffer.poll_batch_notify(b)

      # More than 1000 messages: the push runs on a dirty CPU scheduler, and the notification
      # is sent from there (with that call's env).
      spawn_link(fn ->
        {:ok, 2_500} = BatchBuffer.push_many(b, for(n <- 1..2_500, do: "d#{n}"))
      end)

      await_ready(b, "notification from a dirty push")
      {:ok, batch} = BatchBuffer.poll_batch_notify(b)
      assert length(batch.messages) == 2_000
      :ok = BatchBuffer.ack(b, batch)
      # 500 left, lingering (the wait is the far linger deadline).
      assert {:would_block, _} = BatchBuffer.poll_batch_notify(b)

      # A blocking stop (dirty IO) from another process: the armed sink learns it must look.
      parent = self()
      spawn_link(fn -> send(parent, {:stopped, BatchBuffer.stop(b, 5_000)}) end)
      await_ready(b, "notification from a dirty stop")
      {:ok, rest} = BatchBuffer.poll_batch_notify(b)
      assert rest.trigger == :stop
      assert length(rest.messages) == 500
      :ok = BatchBuffer.ack(b, rest)
      assert_receive {:stopped, {:ok, report}}, 10_000
      assert report.delivered == 2_500
      refute report.timed_out
      assert {:error, :closed} = BatchBuffer.poll_batch_notify(b)
    end
  end

  defmodule GenServerSink do
    # A sink as a GenServer: everything happens in handle_info/2, no timeouts of its own.
    use GenServer

    def init({b, parent}) do
      :ok = BatchBuffer.subscribe(b)
      {:ok, {b, parent}}
    end

    def handle_info({:tidemark_batch_ready, b}, {b, parent} = state) do
      drain(b, parent)
      {:noreply, state}
    end

    defp drain(b, parent) do
      case BatchBuffer.poll_batch_notify(b) do
        {:ok, batch} ->
          :ok = BatchBuffer.ack(b, batch)
          send(parent, {:gen_sink, batch.trigger, batch.messages})
          drain(b, parent)

        {:would_block, _} ->
          :ok

        {:error, :closed} ->
          send(parent, :gen_sink_closed)
      end
    end
  end

  test "a GenServer sink gets count, linger and stop batches through handle_info/2 alone" do
    {:ok, b} = BatchBuffer.new(max_messages: 4, linger_ms: 10)
    {:ok, _sink} = GenServer.start_link(GenServerSink, {b, self()})
    {:ok, 6} = BatchBuffer.push_many(b, ["a", "b", "c", "d", "e", "f"])
    assert_receive {:gen_sink, :count, [{"a", nil}, {"b", nil}, {"c", nil}, {"d", nil}]}, 10_000
    assert_receive {:gen_sink, :linger, [{"e", nil}, {"f", nil}]}, 10_000
    {:ok, 1} = BatchBuffer.push_many(b, ["g"])
    ref = BatchBuffer.stop_async(b, 60_000)
    assert_receive {:gen_sink, trigger, [{"g", nil}]}, 10_000
    assert trigger in [:stop, :linger]
    assert_receive :gen_sink_closed, 10_000
    assert_receive {:tidemark_stopped, ^ref, %{delivered: 7, timed_out: false}}, 10_000
  end

  describe "stop_async" do
    test "the sink itself stops the buffer and keeps acking while it drains" do
      {:ok, b} = BatchBuffer.new(max_messages: 4, linger_us: @never, max_inflight_batches: 1)
      :ok = BatchBuffer.subscribe(b)
      msgs = for n <- 1..10, do: {"s#{n}", {n, 0}}
      {:ok, 10} = BatchBuffer.push_many(b, msgs)
      await_ready(b, "initial notification")
      {:ok, held} = BatchBuffer.poll_batch_notify(b)
      assert held.trigger == :count
      # One batch in flight at most: the sink is armed, waiting for its own ack.
      assert {:would_block, _} = BatchBuffer.poll_batch_notify(b)

      # A long grace: if the stop waited for it instead of our acks, the report would say
      # timed_out (and the test would take a minute).
      ref = BatchBuffer.stop_async(b, 60_000)
      assert is_reference(ref)
      assert {:error, :stopping} = BatchBuffer.push(b, "late")
      assert {:error, :stopping, 0} = BatchBuffer.push_many(b, ["late"])
      refute_received {:tidemark_stopped, ^ref, _}

      # The stop itself notified the armed sink (from this very process's call).
      await_ready(b, "notification of the stop")
      # Keep being the sink: ack the batch held from before, take what the stop emits, ack it.
      :ok = BatchBuffer.ack(b, held)
      taken = stop_drain(b, [held])
      assert Enum.concat(Enum.map(taken, & &1.messages)) == msgs

      assert_receive {:tidemark_stopped, ^ref, report}, 10_000
      refute report.timed_out
      assert report.accepted == 10
      assert report.delivered == 10
      assert report.handed_back_count == 0
      assert report.handed_back == []
      # Every stop gets the same report; the blocking one returns at once now.
      assert {:ok, ^report} = BatchBuffer.stop(b, 0)
      ref2 = BatchBuffer.stop_async(b, 0)
      assert_receive {:tidemark_stopped, ^ref2, ^report}, 10_000
    end

    # Takes and acks everything until the buffer closes; returns every batch taken, in order.
    defp stop_drain(b, taken) do
      case BatchBuffer.poll_batch_notify(b) do
        {:ok, batch} ->
          assert batch.trigger in [:count, :stop]
          :ok = BatchBuffer.ack(b, batch)
          stop_drain(b, taken ++ [batch])

        {:would_block, _} ->
          await_ready(b, "notification while stopping")
          stop_drain(b, taken)

        {:error, :closed} ->
          Enum.sort_by(taken, & &1.id)
      end
    end

    test "a sink that never acks: the deadline hands the batch back, the caller is free" do
      {:ok, b} = BatchBuffer.new(max_messages: 2, linger_us: @never)
      {:ok, 3} = BatchBuffer.push_many(b, ["a", "b", "c"])
      {:ok, stuck} = BatchBuffer.poll_batch(b)
      ref = BatchBuffer.stop_async(b, 50)
      # The caller is not blocked: it can still call into the buffer while the stop drains.
      assert {:error, :stopping} = BatchBuffer.push(b, "d")
      {:ok, _stats} = BatchBuffer.stats(b)
      assert_receive {:tidemark_stopped, ^ref, report}, 10_000
      assert report.timed_out
      assert report.unknown_batches == 1
      assert report.handed_back_messages == [{"a", nil}, {"b", nil}, {"c", nil}]
      assert report.outcome_unknown == [true, true, false]
      assert {:error, :not_in_flight} = BatchBuffer.ack(b, stuck)
    end

    test "an empty buffer reports at once; a large hand-back is sent from a dirty scheduler" do
      {:ok, b} = BatchBuffer.new()
      ref = BatchBuffer.stop_async(b, 60_000)
      assert_receive {:tidemark_stopped, ^ref, %{accepted: 0, timed_out: false}}, 10_000

      {:ok, b} = BatchBuffer.new(max_messages: 512, linger_us: @never, max_inflight_batches: 1)
      msgs = for n <- 1..3_000, do: "h#{n}"
      {:ok, 3_000} = BatchBuffer.push_many(b, msgs)
      {:ok, _stuck} = BatchBuffer.poll_batch(b)
      ref = BatchBuffer.stop_async(b, 20)
      assert_receive {:tidemark_stopped, ^ref, report}, 10_000
      assert report.handed_back_count == 3_000
      assert Enum.map(report.handed_back_messages, &elem(&1, 0)) == msgs
    end
  end

  describe "push_many" do
    test "longest prefix: full, then the rest once capacity is released" do
      {:ok, b} = BatchBuffer.new(max_messages: 4, linger_us: @never, capacity_messages: 8)
      msgs = for n <- 1..10, do: {"m#{n}", {n, 0}}
      assert {:error, :full, 8} = BatchBuffer.push_many(b, msgs)
      assert {:error, :full, 0} = BatchBuffer.push_many(b, Enum.drop(msgs, 8))
      {:ok, stats} = BatchBuffer.stats(b)
      assert stats.accepted == 8
      assert stats.rejected_full >= 2

      {:ok, batch} = BatchBuffer.poll_batch(b)
      assert batch.messages == Enum.take(msgs, 4)
      :ok = BatchBuffer.ack(b, batch)
      assert {:ok, 2} = BatchBuffer.push_many(b, Enum.drop(msgs, 8))
      assert {:ok, 0} = BatchBuffer.push_many(b, [])

      {:ok, b2} = BatchBuffer.poll_batch(b)
      assert {:would_block, _} = BatchBuffer.poll_batch(b)
      _ = BatchBuffer.flush(b, 0)
      {:ok, b3} = BatchBuffer.poll_batch(b)
      assert b2.messages ++ b3.messages == Enum.drop(msgs, 4)
      assert b3.highest_offset == {10, 0}
      :ok = BatchBuffer.ack(b, b2)
      :ok = BatchBuffer.ack(b, b3)
      {:ok, report} = BatchBuffer.stop(b, 0)
      assert report.delivered == 10
    end

    test "too large, stopping, closed; malformed input takes nothing" do
      {:ok, b} =
        BatchBuffer.new(
          max_messages: 10,
          max_bytes: 1_024,
          capacity_bytes: 1_024,
          linger_us: @never
        )

      big = :binary.copy("z", 2_000)
      assert {:error, :too_large, 1} = BatchBuffer.push_many(b, ["a", big, "b"])
      assert_raise ArgumentError, fn -> BatchBuffer.push_many(b, ["c", :no]) end
      assert_raise ArgumentError, fn -> BatchBuffer.push_many(b, ["c", {"d", {1}}]) end
      assert_raise ArgumentError, fn -> BatchBuffer.push_many(b, ["c" | "d"]) end
      {:ok, stats} = BatchBuffer.stats(b)
      assert stats.accepted == 1
      assert stats.rejected_too_large >= 1

      # Sub-binaries and binaries that are parts of larger ones are read as they are.
      parts = [binary_part(big, 0, 10), binary_part("0123456789", 3, 4)]
      assert {:ok, 2} = BatchBuffer.push_many(b, parts)

      ref = BatchBuffer.stop_async(b, 0)
      assert_receive {:tidemark_stopped, ^ref, report}, 10_000

      assert report.handed_back_messages == [
               {"a", nil},
               {:binary.copy("z", 10), nil},
               {"3456", nil}
             ]

      assert {:error, :closed, 0} = BatchBuffer.push_many(b, ["x", "y"])
    end
  end

  describe "batches as one binary" do
    test "every message is a sub-binary of one copy of the batch's payload" do
      {:ok, b} = BatchBuffer.new(max_messages: 100, linger_us: @never)
      # 100-byte payloads: the VM may turn a sub-binary of at most 64 bytes (the heap-binary
      # limit) into a heap copy when the process garbage-collects.
      msgs = for n <- 1..100, do: {:crypto.strong_rand_bytes(100), {n, rem(n, 3)}}
      {:ok, 100} = BatchBuffer.push_many(b, msgs)
      {:ok, batch} = BatchBuffer.poll_batch(b)
      assert batch.messages == msgs
      assert batch.highest_offset == {100, 1}
      assert batch.trigger == :count

      # One binary of 10 000 bytes behind every payload.
      for {payload, _} <- batch.messages do
        assert byte_size(payload) == 100
        assert :binary.referenced_byte_size(payload) == 10_000
      end

      # The terms own their bytes: acking, then reusing the buffer's memory changes nothing.
      :ok = BatchBuffer.ack(b, batch)
      {:ok, 100} = BatchBuffer.push_many(b, for(_ <- 1..100, do: :binary.copy(<<0>>, 100)))
      {:ok, other} = BatchBuffer.poll_batch(b)
      :ok = BatchBuffer.ack(b, other)
      assert batch.messages == msgs
      {:ok, _} = BatchBuffer.stop(b, 0)
    end

    test "mixed lengths, empty payloads and offsets keep their order and bounds" do
      {:ok, b} = BatchBuffer.new(max_messages: 7, linger_us: @never)
      lens = [0, 1, 63, 64, 65, 1_000, 0]

      msgs =
        for {len, i} <- Enum.with_index(lens) do
          payload = :binary.copy(<<?a + i>>, len)
          if rem(i, 2) == 0, do: {payload, {i, 0}}, else: payload
        end

      {:ok, 7} = BatchBuffer.push_many(b, msgs)
      {:ok, batch} = BatchBuffer.poll_batch(b)

      expected =
        Enum.map(msgs, fn
          {p, o} -> {p, o}
          p -> {p, nil}
        end)

      assert batch.messages == expected
      assert Enum.map(batch.messages, &byte_size(elem(&1, 0))) == lens
      total = Enum.sum(lens)

      # (Sub-binaries of at most 64 bytes may have become heap copies by a GC.)
      for {p, _} <- batch.messages,
          byte_size(p) > 64,
          do: assert(:binary.referenced_byte_size(p) == total)

      :ok = BatchBuffer.ack(b, batch)
      {:ok, _} = BatchBuffer.stop(b, 0)
    end
  end
end
