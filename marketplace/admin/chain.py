from django.contrib import admin

from marketplace.models import ChainTransaction


@admin.register(ChainTransaction)
class ChainTransactionAdmin(admin.ModelAdmin):
    list_display = ("created", "contract", "function", "status", "gas_used", "account",
                    "tx_hash")
    list_filter = ("status", "contract", "function", "chain_id")
    search_fields = ("tx_hash", "account", "args")
    date_hierarchy = "created"
    readonly_fields = [f.name for f in ChainTransaction._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # an audit trail is append-only
