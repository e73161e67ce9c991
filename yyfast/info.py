"""``python -m yyfast.info``: versions and which kernel backends are built and usable here."""
from __future__ import annotations

import json
import platform
import sys


def collect() -> dict:
    import torch

    from . import __version__
    from .availability import backends

    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # not installed, or broken
        triton_version = None
    gpus = ([torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    return {"yyfast": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "triton": triton_version, "gpus": gpus, "backends": backends()}


EXAMPLES = """
  python -m yyfast.info
  python -m yyfast.info --json
"""


def main(argv=None) -> int:
    from .cli_help import parser as make_parser

    parser = make_parser("info", "Versions, GPUs and which kernel backends are built and usable here.", EXAMPLES)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"yyfast {report['yyfast']}  python {report['python']}  torch {report['torch']} "
          f"(CUDA {report['torch_cuda'] or 'none'})  triton {report['triton'] or 'not installed'}")
    print(f"GPUs: {', '.join(report['gpus']) or 'none visible'}")
    print(f"{'backend':<10} {'built':<6} {'available':<10} {'devices':<10} reason")
    for name, info in report["backends"].items():
        print(f"{name:<10} {str(info['built']):<6} {str(info['available']):<10} "
              f"{','.join(info['devices']) or '-':<10} {info['reason'] or ''}")
    if report["backends"]["cuda"].get("cpu_isa"):
        print(f"C++ CPU span kernels: {report['backends']['cuda']['cpu_isa']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
