"""One run summary from the store, rendered as live progress, `status`, the HTML report,
and the pipeline graph as text."""
