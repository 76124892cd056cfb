from datetime import timedelta

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.utils import timezone

from accounts.models import Scope, User


class SignUpForm(UserCreationForm):
    email = forms.EmailField(
        required=True, help_text="For receipts and to get back into your account.")

    class Meta:
        model = User
        fields = ("username", "email")

    def clean_email(self):
        email = self.cleaned_data["email"].strip()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(
                "An account with this email already exists. Log in instead, or use another "
                "address.")
        return email


EXPIRY_CHOICES = [("", "Never"), ("7", "In 7 days"), ("30", "In 30 days"),
                  ("90", "In 90 days"), ("365", "In a year")]


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="Where you will use it, e.g. “blog build script”.",
        error_messages={"required": "Give the key a name so you can tell it apart later."})
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, initial=Scope.values, widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one thing this key may do."})
    expires_in_days = forms.TypedChoiceField(
        label="Expires", choices=EXPIRY_CHOICES, coerce=int, empty_value=None, required=False)

    def expires_at(self):
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=days) if days else None
