"""The reporting service: reports for analysts from a projection of every topic."""
