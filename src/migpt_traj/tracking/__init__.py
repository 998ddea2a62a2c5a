"""migpt_traj.tracking"""
