"""The ERP gateway service: keeps external ERPs in step with the suite, both ways."""
