"""One module per resource; each defines a Typer sub-application named `app`."""
