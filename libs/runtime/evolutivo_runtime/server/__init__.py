"""gRPC server bootstrap: lifecycle, health, reflection, interceptors and the admin services."""
