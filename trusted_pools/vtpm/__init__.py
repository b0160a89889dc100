"""vRoT manager: one virtual TPM per instance, state sealed to the host TPM.

Agent side only. :mod:`.driver` is the interface and the loader,
:mod:`.swtpm` the default driver.
"""
