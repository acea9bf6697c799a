"""The ``cvk`` command.

    cvk check            validate every kernel on every available backend against the references
    cvk demo digits      train a small ConvNet on scikit-learn's 8x8 digits with the autograd API
    cvk backends         list the backends this machine can run
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cvk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_check = sub.add_parser("check", help="validate the kernels against the references")
    p_check.add_argument("--seed", type=int, default=0)
    p_demo = sub.add_parser("demo", help="end-to-end demos")
    p_demo.add_argument("name", choices=["digits"])
    p_demo.add_argument("rest", nargs=argparse.REMAINDER,
                        help="options of the demo (see cvk demo digits --help)")
    sub.add_parser("backends", help="list available backends")
    args = parser.parse_args(argv)

    if args.cmd == "check":
        from .check import run_checks
        rows = run_checks(seed=args.seed)
        return 0 if rows and all(r["passed"] for r in rows) else 1
    if args.cmd == "demo":
        from . import demo
        return demo.main(args.rest)
    from . import _ext
    from ._backend import available_backends
    print(" ".join(available_backends()))
    print(_ext.cuda_status())
    return 0


if __name__ == "__main__":
    sys.exit(main())
