"""The money guard alone: which limit refuses, and that every refusal names the limit, the amounts,
the variable that changes it, and that nothing was bought."""

from __future__ import annotations

from decimal import Decimal

import pytest

from smsrent.domain.errors import BudgetExceeded, GuardRefusal, PurchaseUnsettled
from smsrent.domain.principal import Principal, granted
from smsrent.service.guard import MoneyGuard

D = Decimal


def test_no_limits_allow_anything() -> None:
    guard = MoneyGuard()
    guard.check_price(D("99"), D("99"), "plan gotsms:x")
    guard.daily_check(D("1000"), "GotSMS")(D("1000000"), 0, D("1000000"))
    guard.check_auto_renew()
    assert guard.needs_confirmation(D("1000")) is False


def test_max_price_above_the_per_purchase_cap_is_refused() -> None:
    guard = MoneyGuard(max_price=D("1.00"))
    guard.check_price(D("0.60"), D("1.00"), "plan gotsms:x")  # at the cap: allowed
    with pytest.raises(BudgetExceeded) as refused:
        guard.check_price(D("0.60"), D("1.5"), "plan gotsms:x")
    message = refused.value.message
    assert "1.50 USD" in message
    assert "1.00 USD" in message
    assert "per-purchase cap" in message
    assert "SMSRENT_MAX_PRICE, which caps each rental, extension, renewal and re-rent" in message
    assert "nothing was bought" in message
    assert refused.value.message == str(refused.value)


def test_a_price_above_the_per_purchase_cap_names_the_cap_not_the_callers_max_price() -> None:
    """Raising max_price cannot help when the price is above the owner's cap: the refusal says so."""
    guard = MoneyGuard(max_price=D("10"))
    guard.check_price(D("10"), D("10"), "extending getatext:long:7")  # at the cap: allowed
    with pytest.raises(BudgetExceeded) as refused:
        guard.check_price(D("10.55"), D("10"), "extending getatext:long:7")
    message = refused.value.message
    assert "extending getatext:long:7 costs 10.55 USD" in message
    assert "per-purchase cap of 10.00 USD" in message
    assert "SMSRENT_MAX_PRICE" in message
    assert "Raise max_price" not in message
    assert "nothing was bought" in message


def test_price_above_the_callers_max_price_is_refused() -> None:
    guard = MoneyGuard(max_price=D("5"))
    guard.check_price(D("0.55"), D("0.55"), "plan getatext:whatsapp")  # exactly max_price: allowed
    with pytest.raises(BudgetExceeded) as refused:
        guard.check_price(D("0.56"), D("0.55"), "plan getatext:whatsapp")
    message = refused.value.message
    assert "plan getatext:whatsapp costs 0.56 USD" in message
    assert "max_price 0.55 USD" in message
    assert "nothing was bought" in message
    assert "list_plans" in message


def test_daily_budget_refuses_what_would_exceed_it() -> None:
    guard = MoneyGuard(daily_budget=D("5.00"))
    check = guard.daily_check(D("1.25"), "GotSMS")
    check(D("3.75"), 0, D("3.75"))  # exactly fills the budget: allowed
    with pytest.raises(BudgetExceeded) as refused:
        check(D("3.76"), 0, D("3.76"))
    message = refused.value.message
    assert "1.25 USD" in message  # this purchase
    assert "3.76 USD" in message  # already committed
    assert "5.00 USD" in message  # the budget
    assert "SMSRENT_DAILY_BUDGET" in message
    assert "rolling 24 h" in message
    assert "nothing was bought" in message


def test_an_unsettled_purchase_refuses_before_the_budget_is_even_looked_at() -> None:
    check = MoneyGuard(daily_budget=D("100")).daily_check(D("1"), "Getatext")
    with pytest.raises(PurchaseUnsettled) as refused:
        check(D("0"), 1, D("0"))
    assert refused.value.provider == "Getatext"
    message = refused.value.message
    assert "Getatext" in message
    assert "unknown outcome" in message
    assert "counts as spent" in message
    assert "nothing was bought" in message
    assert "list_rentals" in message
    # Also without any budget configured.
    with pytest.raises(PurchaseUnsettled):
        MoneyGuard().daily_check(D("1"), "Getatext")(D("0"), 2, D("0"))


def test_auto_renew_is_refused_under_a_daily_budget_unless_allowed() -> None:
    with pytest.raises(BudgetExceeded) as refused:
        MoneyGuard(daily_budget=D("5")).check_auto_renew()
    message = refused.value.message
    assert "SMSRENT_DAILY_BUDGET" in message
    assert "5.00 USD" in message
    assert "SMSRENT_ALLOW_AUTO_RENEW" in message
    assert "nothing was changed" in message
    MoneyGuard(daily_budget=D("5"), allow_auto_renew=True).check_auto_renew()
    MoneyGuard(max_price=D("1")).check_auto_renew()


def test_confirmation_is_asked_only_above_the_threshold() -> None:
    guard = MoneyGuard(confirm_above=D("1.00"))
    assert guard.needs_confirmation(D("1.00")) is False
    assert guard.needs_confirmation(D("1.01")) is True


@pytest.mark.parametrize(
    "refuse",
    [
        lambda: MoneyGuard(max_price=D("1")).check_price(D("1"), D("2"), "plan p"),
        lambda: MoneyGuard(max_price=D("1")).check_price(D("2"), D("1"), "plan p"),
        lambda: MoneyGuard().check_price(D("2"), D("1"), "plan p"),
        lambda: MoneyGuard(daily_budget=D("1")).daily_check(D("2"), "GotSMS")(D("0"), 0, D("0")),
        lambda: MoneyGuard().daily_check(D("2"), "GotSMS")(D("0"), 1, D("0")),
        lambda: MoneyGuard(daily_budget=D("1")).check_auto_renew(),
    ],
    ids=["cap", "price above cap", "max_price", "budget", "unsettled", "auto_renew"],
)
def test_every_refusal_is_a_guard_refusal_in_one_sentence_that_starts_with_refused(refuse: object) -> None:
    assert callable(refuse)
    with pytest.raises(GuardRefusal) as refused:
        refuse()
    message = refused.value.message
    assert message.startswith("Refused: ")
    assert "\n" not in message
    assert len(message) < 400


ALICE = Principal("alice", granted(["spend"]), daily_budget=D("2.00"), max_price=D("1.00"))


def test_an_agents_daily_budget_refuses_under_the_servers_and_names_the_agents_limit() -> None:
    check = MoneyGuard(daily_budget=D("100")).daily_check(D("0.75"), "GotSMS", ALICE)
    check(D("50"), 0, D("1.25"))  # exactly fills alice's budget
    with pytest.raises(BudgetExceeded) as refused:
        check(D("50"), 0, D("1.26"))
    message = refused.value.message
    assert "agent alice's 2.00 USD daily budget" in message
    assert "its daily_budget in the agents file (SMSRENT_AGENTS_FILE)" in message
    assert "1.26 USD" in message
    assert "0.75 USD" in message
    assert "SMSRENT_DAILY_BUDGET" not in message
    assert "nothing was bought" in message


def test_the_servers_daily_budget_caps_an_agent_with_room_left() -> None:
    check = MoneyGuard(daily_budget=D("3")).daily_check(D("0.75"), "GotSMS", ALICE)
    with pytest.raises(BudgetExceeded) as refused:
        check(D("2.50"), 0, D("0"))  # alice spent nothing; the others spent the server's budget
    assert "SMSRENT_DAILY_BUDGET" in refused.value.message
    assert "alice" not in refused.value.message


def test_an_agents_price_cap_applies_under_the_servers_and_names_the_agents_limit() -> None:
    guard = MoneyGuard(max_price=D("5"))
    guard.check_cap(D("1.00"), ALICE)
    with pytest.raises(BudgetExceeded) as refused:
        guard.check_cap(D("1.01"), ALICE)
    assert "agent alice's per-purchase cap of 1.00 USD" in refused.value.message
    assert "SMSRENT_AGENT_MAX_PRICE" in refused.value.message
    with pytest.raises(BudgetExceeded) as server:
        guard.check_cap(D("6"), ALICE)  # above both: the server's cap is named first
    assert "SMSRENT_MAX_PRICE" in server.value.message
    guard.check_cap(D("4"))  # the owner has no cap of its own


def test_remaining_is_the_tighter_of_both_budgets_never_below_zero() -> None:
    guard = MoneyGuard(daily_budget=D("10"))
    assert guard.remaining(D("3"), D("1.50"), ALICE) == D("0.50")  # alice's 2.00 less 1.50
    assert guard.remaining(D("9.80"), D("0"), ALICE) == D("0.20")  # the server's is tighter
    assert guard.remaining(D("12"), D("0"), ALICE) == 0
    assert guard.remaining(D("3"), D("3")) == D("7")  # the owner: the server's only
    assert MoneyGuard().remaining(D("3"), D("3")) is None


def test_auto_renew_is_refused_under_an_agents_own_budget_unless_allowed() -> None:
    with pytest.raises(BudgetExceeded) as refused:
        MoneyGuard().check_auto_renew(ALICE)
    assert "outside agent alice's 2.00 USD daily budget" in refused.value.message
    assert "SMSRENT_ALLOW_AUTO_RENEW=1" in refused.value.message
    MoneyGuard().check_auto_renew()  # no budget anywhere
    MoneyGuard(allow_auto_renew=True).check_auto_renew(ALICE)
