"""Placeholder: the swtpm pool fixtures are being written."""
