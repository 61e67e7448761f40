import pytest

from dlforge.registry import Registry, RegistryError


def test_unknown_name_suggests_closest_and_lists_known() -> None:
    reg: Registry[int] = Registry("layer")
    reg.add("conv2d", 1)
    reg.add("dense", 2)
    expected = r"unknown layer 'conv2' — did you mean 'conv2d'\? \(known: conv2d, dense\)"
    with pytest.raises(RegistryError, match=expected):
        reg.get("conv2")


def test_duplicate_registration_is_refused() -> None:
    reg: Registry[int] = Registry("model")
    reg.add("a", 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", 2)
    assert reg.get("a") == 1 and "a" in reg and len(reg) == 1
