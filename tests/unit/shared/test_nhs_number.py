import pytest

from shared import nhs_number
from tests.support.data import NHS_NUMBERS, synthetic_nhs_numbers


@pytest.mark.parametrize("number", [*NHS_NUMBERS, "9434765919", "943 476 5919", "943-476-5919"])
def test_valid_numbers_pass(number: str) -> None:
    assert nhs_number.is_valid(number)
    assert nhs_number.problem(number) is None


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("9434765918", "Modulus 11"),  # wrong check digit
        ("9876544321", "Modulus 11"),  # the Data Dictionary's format example is not a valid number
        ("9990000000", "no check digit"),  # prefix 999000000 has remainder giving 10
        ("943476591", "10 digits"),
        ("94347659190", "10 digits"),
        ("94347659A9", "only digits"),
        ("9999999999", "placeholder"),
        ("1111111111", "placeholder"),
        ("", "10 digits"),
        ("\uff19\uff14\uff13\uff14\uff17\uff16\uff15\uff19\uff11\uff19", "only digits"),  # full-width digits
    ],
)
def test_invalid_numbers_say_why(number: str, reason: str) -> None:
    assert not nhs_number.is_valid(number)
    assert reason in (nhs_number.problem(number) or "")


def test_worked_example_from_the_data_dictionary() -> None:
    assert nhs_number.check_digit("943476591") == 9


def test_synthetic_numbers_are_valid_and_distinct() -> None:
    numbers = synthetic_nhs_numbers(500)
    assert len(set(numbers)) == 500
    assert all(nhs_number.is_valid(n) and n.startswith("999") for n in numbers)
