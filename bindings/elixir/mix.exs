# The NIF compiler task lives in lib/mix/tasks but must exist before the project compiles, so it
# is loaded here and kept out of elixirc_paths (it is not part of the :tidemark application).
Code.require_file("lib/mix/tasks/compile.tidemark_nif.ex", __DIR__)

defmodule Tidemark.MixProject do
  use Mix.Project

  def project do
    [
      app: :tidemark,
      version: "0.1.0",
      elixir: "~> 1.14",
      # No Hex packages: the C NIF is built by `make` through this compiler.
      compilers: [:tidemark_nif] ++ Mix.compilers(),
      elixirc_paths: ["lib/tidemark", "lib/tidemark.ex"],
      deps: [],
      start_permanent: false
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end
end
