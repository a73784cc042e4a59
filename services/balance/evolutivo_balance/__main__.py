"""`python -m evolutivo_balance migrate|serve`."""

from evolutivo_balance.entrypoints.app import definition
from evolutivo_runtime.cli import run


def main() -> None:
    run(definition())


if __name__ == "__main__":
    main()
