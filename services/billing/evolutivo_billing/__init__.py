"""The billing service: turns charges into bills, one bill unit per account."""
