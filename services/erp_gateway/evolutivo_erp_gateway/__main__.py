"""`python -m evolutivo_erp_gateway migrate|serve`."""

from evolutivo_runtime.cli import run

from evolutivo_erp_gateway.entrypoints.app import definition


def main() -> None:
    run(definition())


if __name__ == "__main__":
    main()
