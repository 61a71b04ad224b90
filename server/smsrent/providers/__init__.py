"""Provider adapters: one module per provider over a shared HTTP base, all mapping into `smsrent.domain`."""
