"""Job lifecycle: the states, the one place that changes them, and events."""
