defmodule Tidemark.Bench.ReferenceTracker do
  @moduledoc """
  Electric's FlushTracker algorithm (docs/CONTRACT.md §3 "Reference algorithm") in pure Elixir:
  a map writer → `{last_sent, flushed}` of pending writers plus a `:gb_trees` index ordered by
  `{flushed, writer}`. The baseline of `bench/tracker.exs`.

  Same documented deviation as the Rust baseline (benches/src/reference.rs): a report at or
  beyond `last_sent` completes the writer (the original requires equality).

  Commit at `{t, op}`: a new writer enters with `flushed = {t - 1, 0}`, an existing one gets
  `last_sent`; `last_seen = offset`; recompute if the map is empty. Flush: ignored if absent;
  complete (leave) or `flushed = report` (no max); recompute. Recompute: empty map →
  `global = last_seen`, notify `last_seen.tx`; else `global = max(global, min flushed)`, and if
  it changed notify `global.tx - 1`.
  """

  defstruct last_seen: nil, global: {-1, 0}, map: %{}, tree: :gb_trees.empty(), notified: nil

  def new, do: %__MODULE__{}

  def commit(%__MODULE__{map: map, tree: tree} = s, {t, _op} = offset, writers) do
    entered = {t - 1, 0}

    {map, tree} =
      Enum.reduce(writers, {map, tree}, fn w, {map, tree} ->
        case map do
          %{^w => {_last_sent, flushed}} ->
            {Map.put(map, w, {offset, flushed}), tree}

          _ ->
            {Map.put(map, w, {offset, entered}), :gb_trees.insert({entered, w}, true, tree)}
        end
      end)

    s = %{s | map: map, tree: tree, last_seen: offset}
    if map_size(map) == 0, do: recompute(s), else: s
  end

  def flushed(%__MODULE__{map: map, tree: tree} = s, w, offset) do
    case map do
      %{^w => {last_sent, flushed}} ->
        tree = :gb_trees.delete({flushed, w}, tree)

        if offset >= last_sent do
          recompute(%{s | map: Map.delete(map, w), tree: tree})
        else
          tree = :gb_trees.enter({offset, w}, true, tree)
          recompute(%{s | map: Map.put(map, w, {last_sent, offset}), tree: tree})
        end

      _ ->
        s
    end
  end

  def remove(%__MODULE__{map: map, tree: tree} = s, w) do
    case map do
      %{^w => {_, flushed}} ->
        recompute(%{s | map: Map.delete(map, w), tree: :gb_trees.delete({flushed, w}, tree)})

      _ ->
        s
    end
  end

  @doc "The last notified value (`nil` before any; may be -1, duplicated or move back)."
  def ack(%__MODULE__{notified: n}), do: n

  defp recompute(%__MODULE__{map: map, last_seen: {t, _} = last_seen} = s)
       when map_size(map) == 0 do
    %{s | global: last_seen, notified: t}
  end

  defp recompute(%__MODULE__{map: map} = s) when map_size(map) == 0, do: s

  defp recompute(%__MODULE__{global: global, tree: tree} = s) do
    {{min_flushed, _w}, _} = :gb_trees.smallest(tree)
    g = max(global, min_flushed)

    if g != global do
      {tx, _} = g
      %{s | global: g, notified: tx - 1}
    else
      s
    end
  end
end
