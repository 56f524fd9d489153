"""The admin plane: `/admin/v1`, its route table, its OpenAPI document, and what it manages."""
