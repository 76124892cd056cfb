from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.utils import timezone

from accounts import funds, money, services
from accounts.errors import BillingError, InsufficientFunds
from accounts.models import (
    Account,
    ApiKey,
    ChainDeposit,
    DepositState,
    LedgerEntry,
    Payout,
    Reservation,
    User,
    WalletLink,
)


class AccountInline(admin.StackedInline):
    model = Account
    can_delete = False
    fields = ("tier", "available", "held")
    readonly_fields = fields
    available = money.admin_column("balance_wei", "available")
    held = money.admin_column("held_wei", "held")
    # Read-only here: saving the row from a form could write back a balance that a
    # request changed meanwhile. Tier and balance change on the account's own page.

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(User)
class AccountUserAdmin(UserAdmin):
    inlines = [AccountInline]
    list_display = ("username", "email", "tier", "balance", "is_staff", "is_active",
                    "date_joined")
    list_filter = ("account__tier", "is_staff", "is_active")
    list_select_related = ("account",)

    @admin.display(description="tier", ordering="account__tier")
    def tier(self, user):
        account = getattr(user, "account", None)
        return account.get_tier_display() if account else "—"

    @admin.display(description="available")
    def balance(self, user):
        account = getattr(user, "account", None)
        return money.coin_html(account.balance_wei) if account else "—"


class AccountAdminForm(forms.ModelForm):
    adjust_wei = forms.IntegerField(
        required=False, label="Adjust balance by (wei)",
        help_text="Positive adds, negative takes away. Recorded as an adjustment entry.")
    adjust_memo = forms.CharField(required=False, max_length=200, label="Reason")

    class Meta:
        model = Account
        fields = ("tier",)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("adjust_wei") and not (cleaned.get("adjust_memo") or "").strip():
            self.add_error("adjust_memo", "Say why the balance is adjusted.")
        return cleaned


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = AccountAdminForm
    list_display = ("user", "tier", "available", "held", "updated_at")
    list_filter = ("tier",)
    search_fields = ("user__username", "user__email")
    list_select_related = ("user",)
    fields = ("user", "tier", "available", "held", "in_till", "adjust_wei", "adjust_memo",
              "created_at", "updated_at")
    readonly_fields = ("user", "available", "held", "in_till", "created_at", "updated_at")
    available = money.admin_column("balance_wei", "available")
    held = money.admin_column("held_wei", "held")

    @admin.display(description="gateway till")
    def in_till(self, account):
        # accounts.till: while mirrored, "available" lags the gateway's latest requests
        # by the rows not yet written (milliseconds); an adjustment takes it back first.
        if not account.till:
            return "not mirrored"
        return f"mirrored in Redis (generation {account.till}); figures may lag by a batch"

    def has_add_permission(self, request):
        return False  # accounts are made with their user, with the sign-up credit

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if "tier" in form.changed_data:
            services.account_set_tier(obj, tier=form.cleaned_data["tier"])
        amount = form.cleaned_data.get("adjust_wei")
        if amount:
            try:
                services.balance_adjust(obj, amount_wei=amount,
                                        memo=form.cleaned_data["adjust_memo"], by=request.user)
            except InsufficientFunds as exc:
                self.message_user(request, f"Balance not adjusted: {exc.message}.",
                                  messages.ERROR)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "scope_list", "status", "last_used_at",
                    "expires_at", "created_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "expires_at", "created_at")
    search_fields = ("name", "prefix", "user__username", "user__email")
    list_select_related = ("user",)
    # The hash is never shown or editable: keys are created by their owner, on their page.
    fields = ("user", "name", "prefix", "scopes", "expires_at", "last_used_at", "revoked_at",
              "created_at")
    readonly_fields = ("user", "prefix", "last_used_at", "revoked_at", "created_at")
    actions = ["revoke"]

    @admin.display(description="scopes")
    def scope_list(self, key):
        return ", ".join(key.scopes)

    @admin.display(description="status")
    def status(self, key):
        if key.revoked_at:
            return "revoked"
        return "active" if key.is_usable(timezone.now()) else "expired"

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(key)
        self.message_user(request, f"Revoked {queryset.count()} keys.", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = ("reference", "account", "state", "amount", "charged", "refunded",
                    "created_at", "closed_at")
    amount = money.admin_column("amount_wei", "amount")
    charged = money.admin_column("charged_wei", "charged")
    refunded = money.admin_column("refunded_wei", "refunded")
    list_filter = ("state", "created_at")
    search_fields = ("reference", "account__user__username")
    list_select_related = ("account__user",)
    date_hierarchy = "created_at"


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "account", "kind", "amount", "balance_after",
                    "held_after", "reference", "memo")
    amount = money.admin_column("amount_wei", "amount")
    balance_after = money.admin_column("balance_after_wei", "balance after")
    held_after = money.admin_column("held_after_wei", "held after")
    list_filter = ("kind", "created_at")
    search_fields = ("reference", "memo", "account__user__username", "account__user__email")
    list_select_related = ("account__user",)
    date_hierarchy = "created_at"


class DepositAdminForm(forms.ModelForm):
    assign_to = forms.ModelChoiceField(
        queryset=Account.objects.select_related("user"), required=False,
        label="Assign to account",
        help_text="An unattributed deposit: credit it to this account (a deposit entry).")

    class Meta:
        model = ChainDeposit
        fields = ()


@admin.register(ChainDeposit)
class ChainDepositAdmin(admin.ModelAdmin):
    """Deposits seen on chain. An unattributed one (its reference names no account) is
    assigned to an account on its page, or sent back to its sender with the action."""

    form = DepositAdminForm
    list_display = ("tx_hash", "log_index", "block_number", "amount", "sender", "state",
                    "below_minimum", "account", "created_at")
    list_filter = ("state", "below_minimum", "chain_id", "created_at")
    search_fields = ("tx_hash", "sender", "ref", "account__user__username")
    list_select_related = ("account__user",)
    readonly_fields = ("chain_id", "tx_hash", "log_index", "block_number", "block_hash",
                       "sender", "ref", "amount_wei", "account", "state", "below_minimum",
                       "entry", "resolved_by", "created_at")
    actions = ["refund"]

    amount = money.admin_column("amount_wei", "amount")

    def get_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is not None and obj.state == DepositState.UNATTRIBUTED:
            fields.insert(0, "assign_to")
        return fields

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        account = form.cleaned_data.get("assign_to")
        if account is None:
            return
        try:
            funds.deposit_assign(deposit_id=obj.pk, account=account, by=request.user)
        except BillingError as exc:
            self.message_user(request, f"Not assigned: {exc.message}", messages.ERROR)
        else:
            self.message_user(request, f"Credited {money.coin_text(obj.amount_wei)} to {account}.",
                              messages.SUCCESS)

    @admin.action(description="Refund the selected unattributed deposits to their senders")
    def refund(self, request, queryset):
        done = 0
        for deposit in queryset:
            try:
                funds.deposit_refund(deposit_id=deposit.pk, by=request.user)
                done += 1
            except BillingError as exc:
                self.message_user(request, f"{deposit}: {exc.message}", messages.WARNING)
        self.message_user(request, f"{done} refunds queued; the platform wallet sends them.",
                          messages.SUCCESS)


@admin.register(Payout)
class PayoutAdmin(ReadOnlyAdmin):
    """Withdrawals and refunds paid out of the deposit box. Those above
    FUNDS_WITHDRAWAL_APPROVAL_WEI wait here for approval (or rejection, which gives the
    money back to the balance)."""

    list_display = ("payment_id", "kind", "account", "to_address", "amount", "state",
                    "attempts", "tx_hash", "approved_by", "created_at")
    list_filter = ("state", "kind", "created_at")
    search_fields = ("payment_id", "to_address", "tx_hash", "account__user__username")
    list_select_related = ("account__user", "approved_by")
    actions = ["approve", "reject"]

    amount = money.admin_column("amount_wei", "amount")

    def _each(self, request, queryset, service, verb: str):
        done = 0
        for payout in queryset:
            try:
                service(payout_id=payout.pk, by=request.user)
                done += 1
            except BillingError as exc:
                self.message_user(request, f"{payout.payment_id}: {exc.message}",
                                  messages.WARNING)
        self.message_user(request, f"{verb} {done} payouts.", messages.SUCCESS)

    @admin.action(description="Approve the selected withdrawals (they are sent next)")
    def approve(self, request, queryset):
        self._each(request, queryset, funds.payout_approve, "Approved")

    @admin.action(description="Reject the selected withdrawals (the money goes back)")
    def reject(self, request, queryset):
        self._each(request, queryset, funds.payout_reject, "Rejected")


@admin.register(WalletLink)
class WalletLinkAdmin(admin.ModelAdmin):
    list_display = ("address", "user", "created_at")
    search_fields = ("address", "user__username")
    list_select_related = ("user",)
    readonly_fields = ("address", "user", "created_at")

    def has_add_permission(self, request):
        return False  # linked by their owner, with a signature
