"""The only package that speaks SQL. Every claim-changing operation is one ``BEGIN IMMEDIATE`` transaction."""
