"""Reading runs back: replay to a point, analysis, tail, and the `lifecycle-es` command line."""
