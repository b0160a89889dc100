"""trusted-pools-relay: forwards a rack's or cell's agents' evidence to
their conductors in batches (issue 15: the bus costs per message).

On the host side of the trust boundary: it holds an agent-bus user, no
key and no database, and it is not believed for anything. It can drop or
delay pushes (their hosts then go unknown, never trusted on old
evidence), not forge or change them: each push keeps the AK signature of
its host's TPM and is verified alone by the conductor, as a direct push
is.
"""
