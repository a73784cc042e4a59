"""The charging service: prices every billable event the moment it happens."""
