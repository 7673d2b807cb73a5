"""Public API is defined once the selection and benchmarking layers land."""
