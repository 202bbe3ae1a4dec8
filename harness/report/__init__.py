"""Presentation: text lines, Markdown/HTML reports and plots, rendered from stored runs only."""
