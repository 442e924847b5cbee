"""The insurance service: insurers, coverage, eligibility and claims."""
