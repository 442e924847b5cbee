"""The medical records service: charts, access grants and the access audit log."""
