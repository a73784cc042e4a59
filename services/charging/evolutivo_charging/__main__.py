"""`python -m evolutivo_charging migrate|serve`."""

from evolutivo_runtime.cli import run

from evolutivo_charging.entrypoints.app import definition


def main() -> None:
    run(definition())


if __name__ == "__main__":
    main()
