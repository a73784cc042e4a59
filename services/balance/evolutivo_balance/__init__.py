"""The balance service: what each account owes, to the cent, at any instant."""
