"""What a tenant is in this database: profiles, the catalog and each table's scope, the admin rule,
the SQL that selects a tenant's rows, and foreign-key order.
May import: the plumbing (errors, settings, db) only.
"""
