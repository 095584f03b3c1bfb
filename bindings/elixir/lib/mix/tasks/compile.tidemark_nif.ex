defmodule Mix.Tasks.Compile.TidemarkNif do
  @moduledoc """
  Builds `priv/tidemark_nif.so` with `make` (see the Makefile). Needs the static library:
  `cargo build --release --locked -p tidemark-ffi` at the repository root.
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    dir = Path.expand("../../..", __DIR__)

    erts_include =
      Path.join([
        to_string(:code.root_dir()),
        "erts-#{:erlang.system_info(:version)}",
        "include"
      ])

    make_args = ["-C", dir, "--no-print-directory", "ERTS_INCLUDE_DIR=#{erts_include}"]

    case System.cmd("make", ["-q" | make_args], stderr_to_stdout: true) do
      {_, 0} ->
        {:noop, []}

      _ ->
        case System.cmd("make", make_args, stderr_to_stdout: true) do
          {out, 0} ->
            Mix.shell().info(String.trim_trailing(out))
            # In a fresh clone priv/ may not have existed when Mix linked the build directory:
            # link it now so :code.priv_dir(:tidemark) finds the NIF.
            Mix.Project.build_structure()
            {:ok, []}

          {out, status} ->
            Mix.shell().error(out)
            Mix.raise("building the tidemark NIF failed (make exited with #{status})")
        end
    end
  end

  @impl true
  def clean do
    dir = Path.expand("../../..", __DIR__)
    System.cmd("make", ["-C", dir, "--no-print-directory", "clean"], stderr_to_stdout: true)
    :ok
  end
end
