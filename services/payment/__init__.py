"""The payment service: fee schedule, invoices, payments and refunds."""
