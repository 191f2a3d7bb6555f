"""Initial schema: devices, model versions, frames, predictions.

Revision ID: 0001
Revises: 
Create Date: 2026-11-29 14:21:24.611403
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('devices',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=50), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('credentials', sa.JSON(), nullable=False),
    sa.Column('latitude', sa.Double(), nullable=True),
    sa.Column('longitude', sa.Double(), nullable=True),
    sa.Column('city', sa.String(length=200), nullable=False),
    sa.Column('region', sa.String(length=200), nullable=False),
    sa.Column('country', sa.String(length=200), nullable=False),
    sa.Column('sector', sa.String(length=200), nullable=False),
    sa.Column('poll_interval_s', sa.Double(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.CheckConstraint('latitude IS NULL OR latitude BETWEEN -90 AND 90', name=op.f('ck_devices_latitude_range')),
    sa.CheckConstraint('longitude IS NULL OR longitude BETWEEN -180 AND 180', name=op.f('ck_devices_longitude_range')),
    sa.CheckConstraint('poll_interval_s > 0', name=op.f('ck_devices_poll_interval')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices')),
    sa.UniqueConstraint('name', name=op.f('uq_devices_name'))
    )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_devices_city'), ['city'], unique=False)
        batch_op.create_index(batch_op.f('ix_devices_country'), ['country'], unique=False)
        batch_op.create_index('ix_devices_latitude_longitude', ['latitude', 'longitude'], unique=False)

    op.create_table('model_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('run_dir', sa.String(length=1000), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('class_names', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('run_dir', 'step', name=op.f('uq_model_versions_run_dir_step'))
    )
    op.create_table('frames',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('device_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('captured_at', sa.Double(), nullable=False),
    sa.Column('path', sa.String(length=1000), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_frames_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_frames')),
    sa.UniqueConstraint('path', name=op.f('uq_frames_path'))
    )
    with op.batch_alter_table('frames', schema=None) as batch_op:
        batch_op.create_index('ix_frames_captured_at', ['captured_at'], unique=False)
        batch_op.create_index('ix_frames_device_id_captured_at', ['device_id', 'captured_at'], unique=False)

    op.create_table('predictions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('frame_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('model_version_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('top_class', sa.String(length=200), nullable=False),
    sa.Column('top_probability', sa.Double(), nullable=False),
    sa.Column('topk', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['frame_id'], ['frames.id'], name=op.f('fk_predictions_frame_id_frames'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_predictions_model_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_predictions')),
    sa.UniqueConstraint('frame_id', 'model_version_id', name=op.f('uq_predictions_frame_id_model_version_id'))
    )
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_predictions_top_class'), ['top_class'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_predictions_top_class'))

    op.drop_table('predictions')
    with op.batch_alter_table('frames', schema=None) as batch_op:
        batch_op.drop_index('ix_frames_device_id_captured_at')
        batch_op.drop_index('ix_frames_captured_at')

    op.drop_table('frames')
    op.drop_table('model_versions')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index('ix_devices_latitude_longitude')
        batch_op.drop_index(batch_op.f('ix_devices_country'))
        batch_op.drop_index(batch_op.f('ix_devices_city'))

    op.drop_table('devices')
