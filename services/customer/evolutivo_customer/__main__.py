"""`python -m evolutivo_customer migrate|serve`."""

from evolutivo_customer.entrypoints.app import definition
from evolutivo_runtime.cli import run


def main() -> None:
    run(definition())


if __name__ == "__main__":
    main()
