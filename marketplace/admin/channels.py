from django.contrib import admin, messages

from accounts.money import admin_column, coin_html
from marketplace.channels import channel_exit_request
from marketplace.models import PaymentChannel, PaymentChannelState

# Written by the chain or by the services that sign vouchers, never by hand.
CHAIN_FIELDS = ("chain_id", "contract", "channel_id", "payer_address", "host_address",
                "state", "deposit", "spent", "reserved", "remaining", "signature",
                "wants_top_up", "top_up_started_at", "open_tx", "txs", "error", "created",
                "updated", "last_used_at", "exit_at", "closed_at", "host_amount", "fee",
                "refund", "close_tx", "closed_by_exit")


@admin.register(PaymentChannel)
class PaymentChannelAdmin(admin.ModelAdmin):
    list_display = ("host_address", "channel_id", "state", "deposit", "spent", "reserved",
                    "remaining", "last_used_at")
    list_filter = ("state", "chain_id")
    search_fields = ("host_address", "channel_id", "open_tx", "close_tx")
    readonly_fields = CHAIN_FIELDS
    fields = CHAIN_FIELDS
    actions = ["start_exit"]
    deposit = admin_column("deposit_wei", "deposit")
    spent = admin_column("spent_wei", "spent")
    reserved = admin_column("reserved_wei", "reserved")
    host_amount = admin_column("host_amount_wei", "host paid")
    fee = admin_column("fee_wei", "protocol fee")
    refund = admin_column("refund_wei", "refund")

    @admin.display(description="remaining")
    def remaining(self, channel: PaymentChannel):
        if channel.state != PaymentChannelState.OPEN:
            return "—"  # no new leases on it
        return coin_html(channel.remaining_wei)

    @admin.action(description="Start exit (the beat sends it; the deposit comes back after "
                              "the challenge period)")
    def start_exit(self, request, queryset):
        started = sum(channel_exit_request(channel_pk=pk) for pk in
                      queryset.filter(state=PaymentChannelState.OPEN).values_list("pk",
                                                                                  flat=True))
        skipped = queryset.count() - started
        self.message_user(request, f"{started} channel(s) will exit"
                                   + (f"; {skipped} not open, left alone" if skipped else ""),
                          messages.SUCCESS if started else messages.WARNING)

    def has_add_permission(self, request):
        return False  # channels are opened by marketplace.channels

    def has_delete_permission(self, request, obj=None):
        return False  # a channel's row is its books
