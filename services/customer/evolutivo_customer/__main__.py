"""`python -m evolutivo_customer migrate|serve`."""

from evolutivo_runtime.cli import run

from evolutivo_customer.entrypoints.app import definition


def main() -> None:
    run(definition())


if __name__ == "__main__":
    main()
