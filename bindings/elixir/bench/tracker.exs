# The DOMAIN.md §8 workload through the NIF, next to the pure-Elixir reference algorithm
# (bench/reference_tracker.ex), in the same run: writers drawn uniformly from N, 4 distinct
# writers per commit, each commit's writers report it flushed 64 commits later. A writer-op is
# one delivery plus its flush report.
#
#   mix run bench/tracker.exs            # N = 10^4 and 3·10^5, 100 000 commits, 3 rounds
#   mix run bench/tracker.exs --quick    # smoke: N = 10^4, 10 000 commits, 1 round
#
# The workload is generated up front (same steps, same writer ids for every implementation), so
# only the tracker calls are timed. Rounds are interleaved; the median is reported.

Code.require_file("reference_tracker.ex", __DIR__)

defmodule Tidemark.Bench.TrackerBench do
  alias Tidemark.Bench.ReferenceTracker, as: Ref
  alias Tidemark.Tracker

  @per_commit 4
  @lag 64
  @op 2

  def main(args) do
    quick = "--quick" in args
    sizes = if quick, do: [10_000], else: [10_000, 300_000]
    commits = if quick, do: 10_000, else: 100_000
    rounds = if quick, do: 1, else: 3

    IO.puts(
      "tidemark #{Tidemark.native_version()}, #{System.schedulers_online()} schedulers, " <>
        "OTP #{System.otp_release()}, Elixir #{System.version()}"
    )

    IO.puts("#{commits} commits per run, #{rounds} round(s), median ns per writer-op\n")

    IO.puts(
      "| N | reference (Elixir) | NIF flushed/3 | NIF flushed_many/2 | ref / NIF (best) | NIF ack exact |"
    )

    IO.puts("| --- | --- | --- | --- | --- | --- |")
    results = for n <- sizes, do: run_size(n, commits, rounds)

    failed = Enum.reject(results, & &1)
    if failed != [], do: System.halt(1)
  end

  defp run_size(n, commits, rounds) do
    holder = spawn(fn -> Process.sleep(:infinity) end)
    {:ok, t0} = Tracker.new(max_writers: n)
    # Writer ids come from a tracker registered like the measured ones (dense, same order), so
    # one step list serves every implementation.
    ids = for _ <- 1..n, do: elem(Tracker.register_writer(t0, holder), 1)
    ids = List.to_tuple(ids)
    steps = generate(n, commits, ids)
    ops = commits * @per_commit

    runs =
      for _round <- 1..rounds do
        ref_ns = time(fn -> run_ref(steps) end)
        {nif1_ns, exact1} = time_nif(n, holder, steps, commits, :single)
        {nif2_ns, exact2} = time_nif(n, holder, steps, commits, :many)
        {ref_ns / ops, nif1_ns / ops, nif2_ns / ops, exact1 and exact2}
      end

    ref = median(Enum.map(runs, &elem(&1, 0)))
    nif1 = median(Enum.map(runs, &elem(&1, 1)))
    nif2 = median(Enum.map(runs, &elem(&1, 2)))
    exact = Enum.all?(runs, &elem(&1, 3))
    best = min(nif1, nif2)

    IO.puts(
      "| #{n} | #{round(ref)} | #{round(nif1)} | #{round(nif2)} | " <>
        "**#{Float.round(ref / best, 2)}×** | #{if exact, do: "yes", else: "NO"} |"
    )

    Tracker.close(t0)
    exact
  end

  # Steps: {flush_offset | nil, flush_writers, commit_offset, commit_writers}, ids already mapped.
  defp generate(n, commits, ids) do
    :rand.seed(:exsss, {0x7469, 0x6465, 0x6D61})
    ring = :array.new(@lag)

    {steps, _} =
      Enum.map_reduce(0..(commits - 1), ring, fn i, ring ->
        ws = pick(n, [], ids)
        slot = rem(i, @lag)
        flush = if i >= @lag, do: {{i - @lag + 1, @op}, :array.get(slot, ring)}, else: nil
        {{flush, {i + 1, @op}, ws}, :array.set(slot, ws, ring)}
      end)

    steps
  end

  defp pick(_n, acc, _ids) when length(acc) == @per_commit, do: acc

  defp pick(n, acc, ids) do
    w = elem(ids, :rand.uniform(n) - 1)
    if w in acc, do: pick(n, acc, ids), else: pick(n, [w | acc], ids)
  end

  defp run_ref(steps) do
    Enum.reduce(steps, Ref.new(), fn
      {nil, off, ws}, s ->
        Ref.commit(s, off, ws)

      {{foff, fws}, off, ws}, s ->
        s = Enum.reduce(fws, s, fn w, s -> Ref.flushed(s, w, foff) end)
        Ref.commit(s, off, ws)
    end)
  end

  defp time_nif(n, holder, steps, commits, mode) do
    {:ok, t} = Tracker.new(max_writers: n, expected_writers: n)
    for _ <- 1..n, do: {:ok, _} = Tracker.register_writer(t, holder)

    ns =
      time(fn ->
        case mode do
          :single -> run_nif_single(t, steps)
          :many -> run_nif_many(t, steps)
        end
      end)

    # Exactness: after the last commit, every commit but the last 64 was flushed.
    {:ok, ack} = Tracker.ack(t)
    Tracker.close(t)
    {ns, ack == commits - @lag}
  end

  defp run_nif_single(t, steps) do
    Enum.each(steps, fn
      {nil, off, ws} ->
        :ok = Tracker.commit(t, off, ws)

      {{foff, fws}, off, ws} ->
        Enum.each(fws, fn w -> :ok = Tracker.flushed(t, w, foff) end)
        :ok = Tracker.commit(t, off, ws)
    end)
  end

  defp run_nif_many(t, steps) do
    Enum.each(steps, fn
      {nil, off, ws} ->
        :ok = Tracker.commit(t, off, ws)

      {{foff, fws}, off, ws} ->
        {:ok, []} = Tracker.flushed_many(t, Enum.map(fws, &{&1, foff}))
        :ok = Tracker.commit(t, off, ws)
    end)
  end

  defp time(fun) do
    :erlang.garbage_collect()
    t0 = :erlang.monotonic_time(:nanosecond)
    fun.()
    :erlang.monotonic_time(:nanosecond) - t0
  end

  defp median(xs) do
    sorted = Enum.sort(xs)
    Enum.at(sorted, div(length(sorted), 2))
  end
end

Tidemark.Bench.TrackerBench.main(System.argv())
