"""Workers, device leases and frame claims: several processes sharing the work.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 14:55:36.359954
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('workers',
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.Double(), nullable=False),
    sa.Column('heartbeat_at', sa.Double(), nullable=False),
    sa.Column('health', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workers_heartbeat_at'), ['heartbeat_at'], unique=False)

    op.create_table('device_leases',
    sa.Column('device_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('owner', sa.String(length=100), nullable=False),
    sa.Column('expires_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_leases_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_leases'))
    )
    with op.batch_alter_table('device_leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_leases_owner'), ['owner'], unique=False)

    op.create_table('frame_claims',
    sa.Column('frame_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('owner', sa.String(length=100), nullable=False),
    sa.Column('expires_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['frame_id'], ['frames.id'], name=op.f('fk_frame_claims_frame_id_frames'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('frame_id', name=op.f('pk_frame_claims'))
    )
    with op.batch_alter_table('frame_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_frame_claims_owner'), ['owner'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('frame_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_frame_claims_owner'))

    op.drop_table('frame_claims')
    with op.batch_alter_table('device_leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_leases_owner'))

    op.drop_table('device_leases')
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workers_heartbeat_at'))

    op.drop_table('workers')
