defmodule Tidemark.BatchBufferTest do
  use ExUnit.Case, async: true

  import Tidemark.TestHelpers
  alias Tidemark.BatchBuffer

  # A sink process: polls without blocking, acks the first `ack_batches` batches (reporting
  # their messages to `parent`), then takes one more and gets stuck on it (never acks) until
  # told otherwise. `ack_batches: :all` acks everything until the buffer closes.
  defp start_sink(b, parent, ack_batches) do
    spawn_link(fn -> sink_loop(b, parent, ack_batches) end)
  end

  defp sink_loop(b, parent, left) do
    case BatchBuffer.poll_batch(b) do
      {:ok, batch} when left == :all or left > 0 ->
        :ok = BatchBuffer.ack(b, batch)
        send(parent, {:delivered, batch.messages})
        sink_loop(b, parent, if(left == :all, do: :all, else: left - 1))

      {:ok, batch} ->
        send(parent, {:stuck, batch})

        receive do
          :ack_late -> send(parent, {:late_ack, BatchBuffer.ack(b, batch)})
        end

      {:would_block, wait} ->
        ms = if wait == :infinity, do: 1, else: max(1, min(5, div(wait, 1000)))
        Process.sleep(ms)
        sink_loop(b, parent, left)

      {:error, :closed} ->
        send(parent, :sink_closed)
    end
  end

  defp collect_delivered(acc) do
    receive do
      {:delivered, ms} -> collect_delivered(acc ++ ms)
    after
      0 -> acc
    end
  end

  defp producer(b, id, count, parent) do
    spawn_link(fn ->
      for n <- 1..count do
        msg = {"p#{id}-#{n}", {id * 1_000_000 + n, 0}}
        push_until_accepted(b, msg)
      end

      send(parent, {:producer_done, id})
    end)
  end

  defp push_until_accepted(b, msg) do
    case BatchBuffer.push(b, msg) do
      :ok ->
        :ok

      {:error, :full} ->
        Process.sleep(1)
        push_until_accepted(b, msg)
    end
  end

  defp seq({payload, _offset}), do: seq(payload)

  defp seq(payload) when is_binary(payload) do
    ["p" <> id, n] = String.split(payload, "-")
    {String.to_integer(id), String.to_integer(n)}
  end

  test "story 4: OTP shutdown with a stuck sink hands back the unfinished messages in order" do
    {:ok, b} =
      BatchBuffer.new(
        max_messages: 10,
        linger_ms: 2,
        capacity_messages: 1_000,
        max_inflight_batches: 2
      )

    producers = 4
    per_producer = 150
    parent = self()
    _sink = start_sink(b, parent, 5)
    for id <- 1..producers, do: producer(b, id, per_producer, parent)

    # Producers stop first (the shutdown order of an OTP tree: admission, then drain).
    for id <- 1..producers, do: assert_receive({:producer_done, ^id}, 5_000)
    assert_receive {:stuck, stuck}, 5_000

    {:ok, report} = BatchBuffer.stop(b, 150)
    delivered = collect_delivered([])
    total = producers * per_producer

    assert report.timed_out
    assert report.accepted == total
    assert report.accepted == report.delivered + report.failed + report.handed_back_count
    assert report.delivered == length(delivered)
    assert report.failed == 0
    assert length(report.handed_back) == report.handed_back_count
    assert report.unknown_batches == 1
    assert report.in_flight_unknown == length(stuck.messages)

    # Nothing lost, nothing twice.
    handed = Enum.map(report.handed_back, fn {payload, _off, _unknown} -> payload end)
    all = for id <- 1..producers, n <- 1..per_producer, do: "p#{id}-#{n}"
    delivered_payloads = Enum.map(delivered, fn {p, _} -> p end)
    assert Enum.sort(handed ++ delivered_payloads) == Enum.sort(all)

    # In order: per producer, handed back in the order pushed; the stuck batch comes first and is
    # flagged as outcome unknown.
    for id <- 1..producers do
      ns = for p <- handed, {^id, n} <- [seq(p)], do: n
      assert ns == Enum.sort(ns)
    end

    stuck_payloads = Enum.map(stuck.messages, &elem(&1, 0))
    {first, rest} = Enum.split(report.handed_back, length(stuck_payloads))
    assert Enum.map(first, &elem(&1, 0)) == stuck_payloads
    assert Enum.all?(first, fn {_, _, unknown} -> unknown end)
    refute Enum.any?(rest, fn {_, _, unknown} -> unknown end)

    # Offsets come back with the messages.
    assert Enum.all?(report.handed_back, fn {p, off, _} ->
             {id, n} = seq(p)
             off == {id * 1_000_000 + n, 0}
           end)

    # The added fields are handed_back split in two, in the same order.
    assert report.handed_back_messages == Enum.map(report.handed_back, fn {p, o, _} -> {p, o} end)
    assert report.outcome_unknown == Enum.map(report.handed_back, &elem(&1, 2))
    assert Enum.take(report.handed_back_messages, length(stuck.messages)) == stuck.messages

    # After the stop: admission is closed, a late ack is refused, and stop is idempotent.
    assert {:error, :closed} = BatchBuffer.push(b, "late")
    assert {:ok, ^report} = BatchBuffer.stop(b, 0)
  end

  test "handed_back keeps its shape; handed_back_messages requeue as they are" do
    {:ok, b} = BatchBuffer.new(max_messages: 3, linger_ms: 60_000)
    :ok = BatchBuffer.push(b, "a")
    {:ok, 3} = BatchBuffer.push_many(b, [{"b", {2, 0}}, {"c", nil}, {"d", {4, 1}}])
    {:ok, batch} = BatchBuffer.poll_batch(b)
    assert batch.messages == [{"a", nil}, {"b", {2, 0}}, {"c", nil}]
    {:ok, report} = BatchBuffer.stop(b, 0)

    # The first release's shape, unchanged.
    assert report.handed_back == [
             {"a", nil, true},
             {"b", {2, 0}, true},
             {"c", nil, true},
             {"d", {4, 1}, false}
           ]

    # The added fields: batch-message shape plus the parallel flags.
    assert report.handed_back_messages == batch.messages ++ [{"d", {4, 1}}]
    assert report.outcome_unknown == [true, true, true, false]

    # Into another buffer, unchanged: the same messages, offsets and order come out.
    {:ok, b2} = BatchBuffer.new(max_messages: 10, linger_ms: 60_000)
    assert {:ok, 4} = BatchBuffer.push_many(b2, report.handed_back_messages)
    _ = BatchBuffer.flush(b2, 0)
    {:ok, again} = BatchBuffer.poll_batch(b2)
    assert again.messages == report.handed_back_messages
    assert again.highest_offset == {4, 1}
    # A batch's messages too.
    assert {:ok, 4} = BatchBuffer.push_many(b2, again.messages)
    :ok = BatchBuffer.ack(b2, again)
    {:ok, r2} = BatchBuffer.stop(b2, 0)
    assert r2.handed_back_messages == report.handed_back_messages
    assert r2.outcome_unknown == [false, false, false, false]
    assert r2.handed_back == Enum.map(report.handed_back_messages, fn {p, o} -> {p, o, false} end)
  end

  test "the late ack of a handed-back batch is refused" do
    {:ok, b} = BatchBuffer.new(max_messages: 2, linger_ms: 1)
    parent = self()
    sink = start_sink(b, parent, 0)
    :ok = BatchBuffer.push(b, "a")
    :ok = BatchBuffer.push(b, "b")
    assert_receive {:stuck, _batch}, 2_000
    {:ok, report} = BatchBuffer.stop(b, 20)
    assert report.handed_back_count == 2
    send(sink, :ack_late)
    assert_receive {:late_ack, {:error, :not_in_flight}}, 2_000
  end

  test "the lost final batch: a graceful stop delivers the partial batch" do
    # Linger far away and a count trigger never reached: only the stop can emit these.
    {:ok, b} = BatchBuffer.new(max_messages: 100, linger_ms: 60_000)
    parent = self()
    start_sink(b, parent, :all)
    for n <- 1..7, do: :ok = BatchBuffer.push(b, "m#{n}")
    Process.sleep(20)
    refute_received {:delivered, _}

    {:ok, report} = BatchBuffer.stop(b, 2_000)
    refute report.timed_out
    assert report.delivered == 7
    assert report.handed_back == []
    assert_receive {:delivered, ms}
    assert Enum.map(ms, &elem(&1, 0)) == for(n <- 1..7, do: "m#{n}")
    assert_receive :sink_closed, 2_000
  end

  test "push_many, flush, nack with requeue, stats" do
    {:ok, b} = BatchBuffer.new(max_messages: 4, linger_ms: 60_000, capacity_messages: 8)
    assert {:ok, 3} = BatchBuffer.push_many(b, ["a", {"b", {1, 0}}, {"c", nil}])
    assert {:would_block, _} = BatchBuffer.poll_batch(b)
    # Non-blocking flush: marks them due.
    _ = BatchBuffer.flush(b, 0)
    {:ok, batch} = BatchBuffer.poll_batch(b)
    assert batch.trigger == :flush
    assert batch.messages == [{"a", nil}, {"b", {1, 0}}, {"c", nil}]
    assert batch.highest_offset == {1, 0}
    :ok = BatchBuffer.nack(b, batch, true)
    assert {:error, :not_in_flight} = BatchBuffer.ack(b, batch)

    # Capacity 8: 3 held, 5 more fit, the rest is refused and stays with the caller.
    assert {:error, :full, 5} = BatchBuffer.push_many(b, for(n <- 1..7, do: "x#{n}"))
    {:ok, stats} = BatchBuffer.stats(b)
    assert stats.accepted == 8
    assert stats.requeued == 3
    assert stats.rejected_full >= 1

    {:ok, again} = BatchBuffer.poll_batch(b)
    assert Enum.map(again.messages, &elem(&1, 0)) == ["a", "b", "c", "x1"]
    :ok = BatchBuffer.ack(b, again)
    {:ok, report} = BatchBuffer.stop(b, 10)
    assert report.accepted == report.delivered + report.failed + report.handed_back_count
    assert report.delivered == 4
  end

  test "a waiting flush runs on a dirty scheduler while a sink acks" do
    {:ok, b} = BatchBuffer.new(max_messages: 100, linger_ms: 60_000)
    start_sink(b, self(), :all)
    for n <- 1..10, do: :ok = BatchBuffer.push(b, "f#{n}")
    assert :ok = BatchBuffer.flush(b, 2_000)
    {:ok, stats} = BatchBuffer.stats(b)
    assert stats.delivered == 10
    {:ok, _} = BatchBuffer.stop(b, 100)
  end

  test "a large batch is converted on a dirty scheduler" do
    {:ok, b} = BatchBuffer.new(max_messages: 10_000, linger_ms: 60_000, capacity_messages: 20_000)
    msgs = for n <- 1..10_000, do: "big-#{n}"
    assert {:ok, 10_000} = BatchBuffer.push_many(b, msgs)

    {:ok, batch} =
      eventually(fn ->
        case BatchBuffer.poll_batch(b) do
          {:ok, _} = ok -> ok
          _ -> nil
        end
      end)

    assert Enum.map(batch.messages, &elem(&1, 0)) == msgs
    :ok = BatchBuffer.ack(b, batch)
    {:ok, report} = BatchBuffer.stop(b, 10)
    assert report.delivered == 10_000
  end

  test "malformed arguments raise ArgumentError" do
    {:ok, b} = BatchBuffer.new()
    assert_raise ArgumentError, fn -> BatchBuffer.push(b, :not_binary) end
    assert_raise ArgumentError, fn -> BatchBuffer.push(b, {"x", {1}}) end
    assert_raise ArgumentError, fn -> BatchBuffer.push_many(b, ["ok", 5]) end
    assert_raise ArgumentError, fn -> BatchBuffer.new(linger: 5) end
    assert {:error, :invalid_argument} = BatchBuffer.new(max_messages: 0)
    {:ok, _} = BatchBuffer.stop(b, 0)
  end
end
