"""The metrics sidecar: scrape, receive, enrich, expose, push."""
