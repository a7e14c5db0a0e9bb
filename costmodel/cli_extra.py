"""Extra CLI commands (book, plan, compare, roofline, ...) are registered here."""
