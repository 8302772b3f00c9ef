"""The supervisor's HTTP surface: health and metrics, the admin API, the console."""
