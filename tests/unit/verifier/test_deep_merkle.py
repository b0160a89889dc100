"""The Merkle tree of deep attestation against RFC 6962 / RFC 9162
vectors (the certificate-transparency reference test data), and attacks
on inclusion proofs."""

from __future__ import annotations

import hashlib

import pytest

from trusted_pools import exception
from trusted_pools.verifier import deep

# RFC 6962 reference leaves and the roots of their first n (1..8).
LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31",
          b"\x40\x41\x42\x43", bytes(range(0x50, 0x58)),
          bytes(range(0x60, 0x70))]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path) from the same test data.
PROOFS = [
    (0, 1, []),
    (0, 8, [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_reference_vectors(size):
    assert deep.MerkleTree(LEAVES[:size]).root.hex() == ROOTS[size - 1]


@pytest.mark.parametrize("index,size,path", PROOFS)
def test_proofs_match_the_reference_vectors(index, size, path):
    tree = deep.MerkleTree(LEAVES[:size])
    assert [p.hex() for p in tree.proof(index)] == path
    assert deep.verify_inclusion(LEAVES[index], index, size,
                                 [bytes.fromhex(p) for p in path],
                                 bytes.fromhex(ROOTS[size - 1]))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 9, 31, 33, 100])
def test_every_leaf_of_odd_and_even_trees_proves_inclusion(size):
    leaves = [hashlib.sha256(b"q%d" % i).digest() for i in range(size)]
    tree = deep.MerkleTree(leaves)
    for index, leaf in enumerate(leaves):
        proof = tree.proof(index)
        assert deep.verify_inclusion(leaf, index, size, proof, tree.root)
        # The same proof at any other position, or for another leaf, fails.
        for other in {index - 1, index + 1} & set(range(size)):
            assert not deep.verify_inclusion(leaf, other, size, proof,
                                             tree.root)
        assert not deep.verify_inclusion(leaves[index - 1] if size > 1
                                         else b"x", index, size, proof,
                                         tree.root)


def test_last_leaf_is_not_duplicated():
    """CVE-2012-2459: a tree that duplicates an odd last leaf gives
    [a, b, c] and [a, b, c, c] the same root. Here they differ."""
    a, b, c = (hashlib.sha256(x).digest() for x in (b"a", b"b", b"c"))
    assert deep.MerkleTree([a, b, c]).root != \
        deep.MerkleTree([a, b, c, c]).root


def test_a_node_cannot_pass_for_a_leaf():
    """Second preimage: the two children of a node, given as one leaf's
    data, do not make a tree with the same root."""
    leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(4)]
    tree = deep.MerkleTree(leaves)
    left = deep.leaf_hash(leaves[0])
    right = deep.leaf_hash(leaves[1])
    forged = deep.MerkleTree([left + right, *leaves[2:]])
    assert forged.root != tree.root
    # Nor does the internal node verify as a leaf with the upper path.
    assert not deep.verify_inclusion(
        left + right, 0, 3, tree.proof(0)[1:], tree.root)


@pytest.mark.parametrize("mutate", [
    lambda p: p[:-1], lambda p: p + [bytes(32)],
    lambda p: [bytes(32)] + p[1:], lambda p: list(reversed(p)),
    lambda p: [p[0][:31]] + p[1:],
])
def test_tampered_proofs_fail(mutate):
    leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(7)]
    tree = deep.MerkleTree(leaves)
    proof = list(tree.proof(2))
    assert deep.verify_inclusion(leaves[2], 2, 7, proof, tree.root)
    assert not deep.verify_inclusion(leaves[2], 2, 7, mutate(proof),
                                     tree.root)


@pytest.mark.parametrize("index,size", [(7, 7), (-1, 7), (0, 0), (3, 4),
                                        (3, 2)])
def test_index_and_size_must_fit_the_proof(index, size):
    leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(7)]
    tree = deep.MerkleTree(leaves)
    assert not deep.verify_inclusion(leaves[3], index, size, tree.proof(3),
                                     tree.root)


def test_empty_tree_and_bad_index_are_refused():
    with pytest.raises(exception.InvalidParameterValue):
        deep.MerkleTree([])
    with pytest.raises(exception.InvalidParameterValue):
        deep.MerkleTree([b"a"]).proof(1)


def test_host_nonce_is_domain_separated_and_binds_both_inputs():
    root, nonce = bytes(32), b"\x01" * 32
    value = deep.host_nonce(nonce, root)
    assert value == hashlib.sha256(deep.DOMAIN_TAG + nonce + root).digest()
    assert value != deep.host_nonce(b"\x02" * 32, root)
    assert value != deep.host_nonce(nonce, b"\x01" * 32)
