"""The FiftyOne layer: the jobs that run on sample collections, and the schema they write."""
