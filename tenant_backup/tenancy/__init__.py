"""What a tenant is in this database: profiles, the catalog and each table's scope, the tenants,
the role's access, the admin rule, the SQL that selects a tenant's rows and makes them equal to
staged ones, and foreign-key order. May import: the plumbing (errors, settings, db) only.
"""
